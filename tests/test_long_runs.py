"""Issue 21: what a long run keeps on disk (checkpoint.keep, bounded samples/), resume from the
newest checkpoint bit for bit, and stage 1 leaving nothing of TRL's trainer on the model."""
import torch

from compose_rl.models import load_policy
from compose_rl.rl.learner import run_rl
from compose_rl.rundir import RunDir

from .test_learner import PAIRS, FixedCollector, StubEngine, _rl_cfg

REWARDS = [1.0, 0.0, 2.0, -1.0, 3.0]


def _checkpoints(run):
    return sorted(p.name for p in (run.path / "checkpoints").iterdir() if p.is_dir())


def test_50_steps_keep_n_plus_stage_checkpoints_and_resume_from_the_newest_is_exact(tmp_path):
    """checkpoint_every 1 over 50 steps with keep 3: the newest 3 step checkpoints and the stage
    checkpoint remain. Resumed from the newest for 5 more steps, the weights equal those of one
    uninterrupted 55-step run exactly (weights, Adam moments and step count all restored)."""
    policy = load_policy("tiny", seed=0)
    run = RunDir.create(tmp_path / "a", "t", "")
    run.keep = 3
    run.save_checkpoint("sft-final", {"model": policy.model.state_dict()}, {"stage": "sft", "step": 1, "final": True})
    collector = FixedCollector(policy.tokenizer, PAIRS, REWARDS)
    run_rl(policy, StubEngine(), collector, _rl_cfg(steps=50, checkpoint_every=1, lr=1e-3), run, "rl",
           seed=0, max_new_tokens=8)
    assert _checkpoints(run) == ["rl-000047", "rl-000048", "rl-000049", "sft-final"]
    assert (run.path / "checkpoints" / "LATEST").read_text() == "rl-000049"

    resumed = load_policy("tiny", seed=0)  # a fresh process's model: everything comes from the checkpoint
    run_rl(resumed, StubEngine(), collector, _rl_cfg(steps=55, checkpoint_every=1, lr=1e-3), run, "rl",
           seed=0, max_new_tokens=8, resume=run.latest_checkpoint())
    assert [r["step"] for r in run.read_metrics()] == list(range(55))
    assert _checkpoints(run) == ["rl-000052", "rl-000053", "rl-000054", "sft-final"]

    whole = load_policy("tiny", seed=0)
    ref = RunDir.create(tmp_path / "b", "t", "")
    run_rl(whole, StubEngine(), collector, _rl_cfg(steps=55, checkpoint_every=100, lr=1e-3), ref, "rl",
           seed=0, max_new_tokens=8)
    a, b = resumed.model.state_dict(), whole.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = load_policy("tiny", seed=0).model.state_dict()
    assert not all(torch.equal(a[k], start[k]) for k in a)  # the 55 steps did train


def test_a_fresh_rl_stage_drops_the_rows_of_an_attempt_killed_before_its_first_checkpoint(tmp_path):
    """Resuming from the stage-1 checkpoint restarts RL at step 0: the killed attempt's RL rows (it never
    checkpointed) must not stay beside the new ones; other stages' rows stay."""
    policy = load_policy("tiny", seed=0)
    run = RunDir.create(tmp_path / "a", "t", "")
    run.log("eval-sft", 0, {"x": 1.0})
    for step in range(4):  # the killed attempt
        run.log("rl", step, {"reward/mean": -9.0})
    collector = FixedCollector(policy.tokenizer, PAIRS, REWARDS)
    run_rl(policy, StubEngine(), collector, _rl_cfg(steps=2, checkpoint_every=100, lr=1e-3), run, "rl",
           seed=0, max_new_tokens=8)
    rows = run.read_metrics()
    assert [(r["stage"], r["step"]) for r in rows] == [("eval-sft", 0), ("rl", 0), ("rl", 1)]
    assert all(r.get("reward/mean") != -9.0 for r in rows)


def test_samples_are_rotated_at_the_cap_and_still_readable_across_it(tmp_path):
    """samples/<stage>.txt past the cap becomes <stage>.previous.txt: at most ~2x the cap on disk,
    the newest step always in <stage>.txt, and the primitive tracker still reads a window of steps
    that straddles the rotation."""
    from compose_rl.evals.probes import logged_texts

    run = RunDir.create(tmp_path, "t", "")
    run.samples_max_bytes = 1000
    step_bytes = len("===== rl step 100 =====\n" + "x" * 40 + "\n---\n" + "y" * 40 + "\n")
    for step in range(200):
        run.write_samples("rl", step, [f"{step:03d}" + "x" * 37, f"{step:03d}" + "y" * 37])
        files = sorted(p.name for p in (run.path / "samples").iterdir())
        assert files in (["rl.txt"], ["rl.previous.txt", "rl.txt"], ["rl.previous.txt"])
        total = sum(p.stat().st_size for p in (run.path / "samples").iterdir())
        assert total <= 2 * (1000 + step_bytes)
    cur = (run.path / "samples" / "rl.txt").read_text() if (run.path / "samples" / "rl.txt").exists() else ""
    prev = (run.path / "samples" / "rl.previous.txt").read_text()
    assert "===== rl step 199 =====" in cur + prev and "===== rl step 0 =====" not in cur + prev
    # a window of steps that straddles the rotation reads whole
    first = int(prev.split("===== rl step ")[-1].split(" ")[0]) - 2
    got = logged_texts(run.path / "samples" / "rl.txt", first, 199)
    assert [t[:3] for t in got] == [f"{s:03d}" for s in range(first, 200) for _ in range(2)]


def test_stage_1_leaves_no_trainer_and_the_numerics_of_a_fresh_process(tmp_path):
    """After run_sft nothing of TRL's trainer is alive (no Trainer, Accelerator, optimizer or
    DataLoader object), the model's forward is its class's again (accelerate had set a bf16-autocast
    wrapper on the instance, which kept RL in the same process in mixed precision), and its logits
    equal, bit for bit, those of a fresh model loaded with the same weights (a resumed process)."""
    import gc

    from compose_rl.recipe import SftCfg
    from compose_rl.sft.stage import run_sft

    policy = load_policy("tiny", seed=0)
    cfg = SftCfg(examples=8, max_steps=2, batch_size=4, gate="off")
    pairs = [("func_1(\"ab\")", "ba"), ("func_2(\"xy\")", "yx")] * 4
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    run_sft(policy, pairs, cfg, RunDir.create(tmp_path, "t", ""), "sft", seed=0)
    gc.collect()
    names = {"SFTTrainer", "Trainer", "Accelerator", "AcceleratorState", "AdamW", "DataLoader", "LambdaLR"}
    alive = sorted({type(o).__name__ for o in gc.get_objects() if type(o).__name__ in names})
    assert alive == [] or alive == ["AcceleratorState"], alive  # accelerate's state is a process singleton, holds no model
    assert "forward" not in vars(policy.model) and "_original_forward" not in vars(policy.model)
    assert policy.model.config.use_cache is True  # as built; the Trainer had set it to False
    after = policy.model.state_dict()
    assert not all(torch.equal(before[k], after[k]) for k in after)  # SFT did train
    fresh = load_policy("tiny", seed=1)
    fresh.model.load_state_dict(after)
    ids = torch.randint(4, 100, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(policy.model(ids).logits, fresh.model(ids).logits)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def test_freed_arrow_pool_pages_go_back_to_the_os():
    """Stage 1's dataset lives in Arrow's memory pool (mimalloc), which keeps freed pages mapped
    where glibc's malloc_trim cannot reach them: after transfer-ttt's stage 1 a 1 GiB mapping of it
    held 184 MB resident through all of RL, the largest part of the in-process vs resumed gap
    (docs/results/long-runs.md). return_freed_heap must hand them back."""
    import gc
    import sys

    import pytest

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/status")
    np, pa = pytest.importorskip("numpy"), pytest.importorskip("pyarrow")
    import pyarrow.compute as pc

    from compose_rl.memory import return_freed_heap

    def through_the_pool(n: int) -> None:
        ones = pa.array(np.ones(n, dtype=np.int64))
        twos = pc.add(ones, 1)
        del ones, twos

    through_the_pool(1 << 10)  # Arrow's kernels and thread pool, set up once
    return_freed_heap()
    before = _rss_mb()
    through_the_pool(16 << 20)  # 128 MB
    gc.collect()
    kept = _rss_mb() - before
    if kept < 64:
        pytest.skip(f"this pyarrow's pool returned freed pages itself (kept {kept:.0f} MB)")
    return_freed_heap(collect=False)  # what the learner calls every step; stage 1 calls it with gc
    assert _rss_mb() - before < 32, (before, kept, _rss_mb())
