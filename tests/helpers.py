"""Shared builders for tests: a tiny policy saved to disk and loaded back through the real loader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from calgrpo.models.config import TinyModelConfig
from calgrpo.models.loading import Policy, load_policy
from calgrpo.models.tiny import save_tiny_policy
from calgrpo.tasks import get_task


def tiny_guess_policy(
    folder: Path, num_values: int = 8, seed: int = 0, architecture: str = "llama"
) -> Policy:
    """A 2-layer, width-32 model for the guess task with ``num_values`` numbers, via save + load."""
    task = get_task("guess", num_values=num_values)
    texts = task.sample_texts(task.generate(64, seed=seed))
    config = TinyModelConfig(
        architecture=architecture, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, seed=seed
    )
    save_tiny_policy(config, texts, folder)
    return load_policy(str(folder))


def run_calgrpo(*args: str, processes: int = 1) -> dict:
    """``calgrpo ARGS`` in a subprocess (under torchrun on ``processes`` ranks when > 1); its last
    stdout line as JSON. One torch thread: tests share two cores."""
    launcher = [sys.executable, "-m", "calgrpo.cli"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                    "-m", "calgrpo.cli"]  # fmt: skip
    result = subprocess.run([*launcher, *args], capture_output=True, text=True, timeout=600, check=False,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"})  # fmt: skip
    assert result.returncode == 0, (args[0], processes, result.stderr[-4000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """``root`` holding ``files`` (relative name -> bytes), folders created; returns ``root``."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root
