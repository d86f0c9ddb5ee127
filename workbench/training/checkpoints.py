"""Checkpoints: written to a temporary directory, then renamed into place; the last k are kept.

A crash (or SIGKILL) at any moment leaves either the previous complete checkpoint or the new one,
never half of one: `latest_checkpoint` only sees directories named `step-NNNNNN`, and a directory gets
that name by an atomic rename after all its files are written and flushed.

Why not `accelerator.save_state`: its loader unpickles RNG states and custom objects with
`weights_only=False`; here weights are safetensors and everything else loads with `weights_only=True`.

What a rename cannot protect against (an interrupted copy of a run, a full disk, a bad sector) is caught on reading:
`state.json`, written last, records every file's size, and `checkpoint_problem` checks each file against it and its
format's own header (safetensors' header, the zip directory of a torch file, the JSON of state.json), in
milliseconds. `usable_checkpoint` gives the newest checkpoint without a problem and says which newer ones it skipped
and why; `load_checkpoint` names the damaged file instead of a deserialiser's traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from workbench.errors import WorkbenchError
from workbench.file_checks import file_problem
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
    files = {f.name: {"bytes": f.stat().st_size} for f in sorted(tmp.iterdir())}
    write_json(tmp / "state.json", {**state, "files": files})  # last: what a complete checkpoint holds
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


def checkpoint_problem(path: str | Path, needs: tuple[str, ...] | None = None) -> str | None:
    """One line naming what is wrong with a checkpoint (a missing, cut, zeroed or unreadable file), or None if it is
    complete: every file `state.json` lists has its recorded size and a readable format. `needs` limits the check to
    those files (and state.json), e.g. ("policy.safetensors",) to read the weights only. Checkpoints written before
    sizes were recorded are checked by format only."""
    path = Path(path)
    state_file = path / "state.json"
    if not state_file.is_file():
        return f"{state_file} is missing (the checkpoint was never finished)"
    if (problem := file_problem(state_file)) is not None:
        return f"{state_file} is damaged: {problem}"
    listed = json.loads(state_file.read_text()).get("files")
    names = list(listed) if listed else [f.name for f in sorted(path.iterdir()) if f.suffix in (".safetensors", ".pt")]
    if needs is not None:
        names = list(needs)
    for name in names:
        f = path / name
        if name == "state.json":
            continue
        if not f.is_file():
            return f"{f} is missing"
        want = listed[name]["bytes"] if listed and name in listed else None
        if want is not None and f.stat().st_size != want:
            return f"{f} is damaged: {f.stat().st_size} bytes, {want} were written"
        if (problem := file_problem(f)) is not None:
            return f"{f} is damaged: {problem}"
    return None


def usable_checkpoint(
    run_dir: str | Path, warn: Callable[[str], None] | None = None, needs: tuple[str, ...] | None = None
) -> Path | None:
    """The newest complete checkpoint of a run (None if it has none at all; `needs`: complete in those files). A
    damaged newer one is skipped with a warning that names it; if every checkpoint is damaged, one line says so."""
    found = list_checkpoints(run_dir)
    skipped = []
    for ckpt in reversed(found):
        problem = checkpoint_problem(ckpt, needs)
        if problem is None:
            if skipped and warn is not None:
                warn(
                    f"warning: skipped the damaged checkpoint(s) {', '.join(c.name for c, _ in skipped)} "
                    f"({skipped[0][1]}); using {ckpt.name}"
                )
            return ckpt
        skipped.append((ckpt, problem))
    if skipped:
        raise WorkbenchError(
            f"every checkpoint of {run_dir} is damaged (newest: {skipped[0][1]}); the run's weights cannot be read"
        )
    return None


def checked(ckpt: str | Path, needs: tuple[str, ...] | None = None) -> Path:
    """`ckpt` if it is complete, else one line naming the damaged file (for a checkpoint asked for by name)."""
    problem = checkpoint_problem(ckpt, needs)
    if problem is not None:
        raise WorkbenchError(f"checkpoint {ckpt} cannot be used: {problem}")
    return Path(ckpt)


def load_checkpoint(path: str | Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any], dict[str, Any]]:
    """(tensors, objects, state) as `save_checkpoint` wrote them; pickles are never executed. A damaged checkpoint is
    one line naming its file."""
    path = checked(path)
    try:
        tensors = {f.stem: load_file(f) for f in sorted(path.glob("*.safetensors"))}
        objects = {f.stem: torch.load(f, map_location="cpu", weights_only=True) for f in sorted(path.glob("*.pt"))}
    except Exception as exc:  # a corruption the size and header checks cannot see (a flipped byte inside the data)
        raise WorkbenchError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from exc
    state = json.loads((path / "state.json").read_text())
    state.pop("files", None)
    return tensors, objects, state
