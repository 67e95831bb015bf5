"""A policy as an HF folder on disk: what vLLM, Ray workers and the LLM judge load."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path


def policy_folder(policy) -> Path:
    """A folder vLLM / a worker can load: `policy.folder`, else the policy saved to a temp folder
    (removed at exit)."""
    if policy.folder is not None and (Path(policy.folder) / "config.json").is_file():
        return Path(policy.folder)
    folder = Path(tempfile.mkdtemp(prefix="compose-rl-policy-"))
    atexit.register(shutil.rmtree, folder, True)
    policy.save(folder)  # sets policy.folder when it was None
    return folder
