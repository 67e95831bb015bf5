"""The run directory: resolved recipe, one metrics stream, readable samples, atomic checkpoints.

Layout: recipe.resolved.yaml, metrics.jsonl, progress.json, checkpoints/<stage>-<step>/ (the newest
`checkpoint.keep`) and checkpoints/<stage>-final/ (every finished stage), samples/ (bounded by
`logging.samples_max_mb`), eval/, report.md + PNGs, and tensorboard/ when `logging.tensorboard` is on. A checkpoint is written to a temporary folder and renamed into
place, then `checkpoints/LATEST` is replaced atomically: a kill at any moment leaves either the old
or the new checkpoint complete, never a half-written one.
"""
from __future__ import annotations

import json
import numbers
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class RunDir:
    path: Path
    tensorboard: bool = False
    """Mirror every `log` row into a TensorBoard event file under `path / "tensorboard"`."""
    keep: int = 2
    """RL step checkpoints kept (recipe `checkpoint.keep`); stage checkpoints (`*-final`) are all kept."""
    samples_max_bytes: int = 16 << 20
    """samples/<stage>.txt is rotated to samples/<stage>.previous.txt past this size (logging.samples_max_mb)."""
    _tb: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def create(cls, output: str | Path, name: str, resolved_yaml: str, tensorboard: bool = False) -> "RunDir":
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(output) / f"{name}-{stamp}"
        # the recipe schema restricts `name` to a safe character set; this is the last line of defence
        if base.resolve().parent != Path(output).resolve():
            raise ValueError(f"run name {name!r} would leave the output folder {output}; use letters, digits, -_.")
        path, k = base, 1
        while path.exists():
            path, k = Path(f"{base}-{k}"), k + 1
        for sub in ("checkpoints", "samples", "eval"):
            (path / sub).mkdir(parents=True)
        _atomic_write(path / "recipe.resolved.yaml", resolved_yaml)
        return cls(path, tensorboard=tensorboard)

    # ------------------------------------------------------------------ metrics
    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def log(self, stage: str, step: int, metrics: dict[str, Any]) -> None:
        row = {"stage": stage, "step": step, "time": round(time.time(), 3), **metrics}
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(row, default=float) + "\n")
        if self.tensorboard:
            self._log_tensorboard(stage, step, metrics)

    def _log_tensorboard(self, stage: str, step: int, metrics: dict[str, Any]) -> None:
        """Numbers only, tagged `<stage>/<key>`: every eval stage logs the same keys at step 0, so the
        stage keeps them apart. Flushed per row, like the JSONL file, so a killed run keeps its curves."""
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise RuntimeError("logging.tensorboard: the tensorboard package is not installed; "
                                   "pip install tensorboard, or set logging.tensorboard: false") from None
            self._tb = SummaryWriter(log_dir=str(self.path / "tensorboard"))
        for key, value in metrics.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool):  # numpy scalars too
                self._tb.add_scalar(f"{stage}/{key}", float(value), step)
        self._tb.flush()

    def read_metrics(self) -> list[dict]:
        if not self.metrics_file.exists():
            return []
        rows = []
        for line in self.metrics_file.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill
                continue
        return rows

    def truncate_metrics(self, stage: str, after_step: int) -> None:
        """On resume, forget rows of `stage` logged after the checkpoint we restart from."""
        rows = [r for r in self.read_metrics() if not (r.get("stage") == stage and r.get("step", -1) > after_step)]
        _atomic_write(self.metrics_file, "".join(json.dumps(r) + "\n" for r in rows))

    def write_samples(self, stage: str, step: int, texts: list[str]) -> None:
        """Append one step's texts; past `samples_max_bytes` the file becomes <stage>.previous.txt (the
        older one is dropped), so a long run keeps at most about twice the cap per stage."""
        if texts:
            path = self.path / "samples" / f"{stage}.txt"
            with open(path, "a") as f:
                f.write(f"===== {stage} step {step} =====\n" + "\n---\n".join(texts) + "\n")
                size = f.tell()
            if size > self.samples_max_bytes:
                os.replace(path, path.with_name(f"{stage}.previous.txt"))

    def write_json(self, rel: str, obj: Any) -> None:
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(p, json.dumps(obj, indent=2, default=float))

    def read_json(self, rel: str, default: Any = None) -> Any:
        p = self.path / rel
        return json.loads(p.read_text()) if p.exists() else default

    # ------------------------------------------------------------------ progress (which stages are done)
    def progress(self) -> dict:
        return self.read_json("progress.json", {"done": [], "labels": {}})

    def mark_done(self, index: int, label: str) -> None:
        prog = self.progress()
        if index not in prog["done"]:
            prog["done"].append(index)
        prog["labels"][str(index)] = label
        self.write_json("progress.json", prog)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, tag: str, tensors: dict[str, Any], meta: dict[str, Any], keep: int | None = None) -> Path:
        """Write checkpoints/<tag> atomically and point LATEST at it, then prune: the newest `keep`
        (default `self.keep`) step checkpoints stay, every stage checkpoint (`<stage>-final`) stays."""
        ckdir = self.path / "checkpoints"
        final = ckdir / tag
        tmp = Path(tempfile.mkdtemp(dir=ckdir, prefix=f".{tag}."))
        torch.save(tensors, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, default=float))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _atomic_write(ckdir / "LATEST", tag)
        keep = self.keep if keep is None else keep
        # step checkpoints by write time (ns; the name breaks a tie); the one just written is never pruned
        steps = sorted((p for p in ckdir.iterdir() if p.is_dir() and not p.name.startswith(".")
                        and not p.name.endswith("-final")), key=lambda p: (p.stat().st_mtime_ns, p.name))
        for old in steps[:-keep]:
            if old.name != tag:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def latest_checkpoint(self) -> tuple[dict, dict] | None:
        ckdir = self.path / "checkpoints"
        latest = ckdir / "LATEST"
        if not latest.exists():
            return None
        tag = latest.read_text().strip()
        d = ckdir / tag
        if not (d / "meta.json").exists():
            return None
        meta = json.loads((d / "meta.json").read_text())
        tensors = torch.load(d / "state.pt", weights_only=False)
        return tensors, meta
