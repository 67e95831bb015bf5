"""Bucketed weight sync (rollout/weight_buckets.py, issue 19), on CPU: buckets cover every tensor exactly once
and never exceed their size; what the receiver delivers equals what the sender had, over plain tensors and
over a real gloo group (the NCCL path is the same code with CUDA tensors: never run here, no GPU)."""
import threading

import pytest
import torch

from compose_rl.rollout.weight_buckets import BucketPlan


def _state():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(37, 16, generator=g)
    return {"emb": emb, "w": torch.randn(16, 9, generator=g).t(), "b": torch.randn(9, generator=g),
            "h": torch.randn(33, generator=g).to(torch.bfloat16), "steps": torch.arange(5),
            "big": torch.randn(300, generator=g), "head": emb}


@pytest.mark.parametrize("bucket_bytes", [8, 64, 100, 1000, 4096, 1 << 30])
def test_buckets_cover_every_tensor_exactly_once_and_never_exceed_the_size(bucket_bytes):
    state = _state()
    plan = BucketPlan.of(state, bucket_bytes)
    assert plan.aliases == {"head": "emb"}  # tied: travels once
    covered: dict[str, list[tuple[int, int]]] = {}
    for b in plan.buckets:
        size = b.numel * torch.empty(0, dtype=getattr(torch, b.dtype)).element_size()
        assert 0 < size <= bucket_bytes
        offsets = sorted((p.offset, p.offset + p.stop - p.start) for p in b.pieces)
        assert offsets[0][0] == 0 and offsets[-1][1] == b.numel  # the bucket is packed without gaps ...
        assert all(a[1] == c[0] for a, c in zip(offsets, offsets[1:]))  # ... or overlaps
        for p in b.pieces:
            assert plan.shapes[p.name][0] == b.dtype
            covered.setdefault(p.name, []).append((p.start, p.stop))
    assert set(covered) == set(state) - {"head"}
    for name, ranges in covered.items():
        ranges.sort()
        assert ranges[0][0] == 0 and ranges[-1][1] == state[name].numel()
        assert all(a[1] == c[0] for a, c in zip(ranges, ranges[1:]))  # contiguous, no element twice
    assert plan.peak_extra_bytes() <= bucket_bytes  # one reused buffer


def _round_trip(state, plan):
    sent: list[torch.Tensor] = []
    plan.send(state, lambda raw: sent.append(raw.clone()), "cpu")
    got: dict[str, torch.Tensor] = {}
    queue = iter(sent)
    plan.receive(lambda raw: raw.copy_(next(queue)), lambda part: got.update({k: v.clone() for k, v in part.items()}),
                 "cpu")
    return sent, got


@pytest.mark.parametrize("bucket_bytes", [8, 100, 4096, 1 << 30])
def test_receiver_gets_the_senders_weights(bucket_bytes):
    state = _state()
    plan = BucketPlan.of(state, bucket_bytes)
    sent, got = _round_trip(state, plan)
    assert len(sent) == len(plan.buckets) and all(s.dtype == torch.uint8 and s.numel() <= bucket_bytes for s in sent)
    assert set(got) == set(state)
    for k, v in state.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and torch.equal(got[k], v), k
    with pytest.raises(ValueError, match="make a new plan"):
        plan.send({**state, "b": torch.zeros(10)}, lambda raw: None)


def test_gloo_broadcast_in_buckets_equals_the_sender():
    """Two ranks of a real gloo group (threads of this process): rank 0 sends a tiny model's weights in
    100-byte buckets, rank 1 loads each bucket's tensors into its own model; the weights end equal."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from compose_rl.rollout.weight_group import WeightGroup, free_port

    cfg = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    sender = LlamaForCausalLM(cfg)
    torch.manual_seed(1)
    receiver = LlamaForCausalLM(cfg)
    state = sender.state_dict()
    assert not all(torch.equal(state[k], v) for k, v in receiver.state_dict().items())
    plan = BucketPlan.of(state, 100)
    port, errors = free_port(), []

    def rank(r):
        try:
            g = WeightGroup("127.0.0.1", port, r, 2, "gloo", timeout_s=60)
            if r == 0:
                plan.send(state, g.broadcast_one)
            else:
                plan.receive(g.broadcast_one, lambda part: receiver.load_state_dict(part, strict=False))
            g.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(plan.buckets) > 20
    for k, v in receiver.state_dict().items():
        assert torch.equal(v, state[k]), k
