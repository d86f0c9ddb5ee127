"""Checkpoints: written to a temporary directory, then renamed into place; the last k are kept.

A crash (or SIGKILL) at any moment leaves either the previous complete checkpoint or the new one,
never half of one: `latest_checkpoint` only sees directories named `step-NNNNNN`, and a directory gets
that name by an atomic rename after all its files are written and flushed.

Why not `accelerator.save_state`: its loader unpickles RNG states and custom objects with
`weights_only=False`; here weights are safetensors and everything else loads with `weights_only=True`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from workbench.run_dirs import write_json

_NAME = re.compile(r"^step-(\d{6,})$")


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    tensors: dict[str, dict[str, torch.Tensor]],
    objects: dict[str, Any],
    state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write `<run_dir>/checkpoints/step-NNNNNN/` atomically and delete all but the newest `keep_last`.

    tensors: name -> flat dict of tensors (a .safetensors file each; no shared storage).
    objects: name -> state dicts of plain tensors/numbers (optimizer, scheduler, RNG), loaded back
    with weights_only=True. state: JSON (step, counters, config fingerprint)."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, flat in tensors.items():
        save_file({k: v.detach().contiguous().cpu() for k, v in flat.items()}, tmp / f"{name}.safetensors")
    for name, obj in objects.items():
        torch.save(obj, tmp / f"{name}.pt")
    write_json(tmp / "state.json", state)
    for f in tmp.iterdir():  # flush file contents before the rename makes the checkpoint visible
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # a re-run of the same step after a resume: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _prune(root, keep_last)
    return final


def _prune(root: Path, keep_last: int) -> None:
    for old in list_checkpoints(root.parent)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):  # left by a killed writer
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any], dict[str, Any]]:
    """(tensors, objects, state) as `save_checkpoint` wrote them; pickles are never executed."""
    import json

    path = Path(path)
    tensors = {f.stem: load_file(f) for f in sorted(path.glob("*.safetensors"))}
    objects = {f.stem: torch.load(f, map_location="cpu", weights_only=True) for f in sorted(path.glob("*.pt"))}
    state = json.loads((path / "state.json").read_text())
    return tensors, objects, state
