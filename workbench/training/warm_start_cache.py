"""Where the thinking-ready model of a base model is cached, and what the cache key is: the base model, every field of
`configs/warmstart.yaml` that changes the numbers, and the corpus bytes - a changed recipe trains anew. `warm:BASE`
names it wherever a model name is taken. Training it is `training.warm_start`, a layer above the trainers."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from workbench.data import data_dir
from workbench.errors import WorkbenchError
from workbench.models import cache_dir
from workbench.training.configs import load_config

WARMSTART_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "warmstart.yaml"
# bumped when the same config trains different numbers (2: micro-batches grouped by length, the LM head on real rows
# only): a warm start cached by older code is then trained anew instead of being served as this code's
TRAINER_ARITHMETIC = 2


def warm_start_config(base: str, overrides: dict[str, Any] | None = None):
    """configs/warmstart.yaml with the base model and any overrides (e.g. max_steps) set."""
    return load_config(WARMSTART_CONFIG, {"model": base, **(overrides or {})})


def warm_start_key(base: str, overrides: dict[str, Any] | None = None) -> str:
    """What the cached warm start depends on: every field of its config that changes the numbers, the corpus, and the
    trainer's arithmetic."""
    h = hashlib.sha256(warm_start_config(base, overrides).fingerprint().encode())
    h.update(f"arithmetic {TRAINER_ARITHMETIC}".encode())
    for split in ("train", "eval"):
        h.update((data_dir() / "thinking" / f"{split}.jsonl").read_bytes())
    return h.hexdigest()[:12]


def cached_warm_start(base: str, overrides: dict[str, Any] | None = None) -> Path:
    """Where the warm start of `base` is (or will be) cached."""
    safe = base.replace("/", "_").replace("\\", "_").strip("._") or "model"
    return cache_dir() / "warmstart" / f"{safe}-{warm_start_key(base, overrides)}"


WARM_PREFIX = "warm:"


def warm_base(name: str) -> str | None:
    """BASE of a `warm:BASE` model name; None for any other name."""
    if not (isinstance(name, str) and name.startswith(WARM_PREFIX)):
        return None
    base = name[len(WARM_PREFIX) :]
    if not base:
        raise WorkbenchError("warm: needs a base model, e.g. warm:gemma3-270m")
    return base


def cached_model_path(name: str) -> str:
    """A model name as `load_model` takes it, without training anything: `warm:BASE` becomes the cached warm start
    of BASE (an error if it is not cached yet); any other name is returned as it is."""
    base = warm_base(name)
    if base is None:
        return name
    target = cached_warm_start(base)
    if not (target / "summary.json").exists():
        raise WorkbenchError(
            f"{name}: no cached warm start of {base} yet (workbench train, workbench score and the "
            f"notebooks train it first; in Python: training.warm_start.thinking_ready_model({base!r}))"
        )
    if (problem := warm_start_problem(target)) is not None:
        raise WorkbenchError(
            f"{name}: the cached warm start is damaged ({problem}); delete {target} and run again "
            "(the shipped one reinstalls in a second)"
        )
    return str(target)


def warm_start_problem(target: Path) -> str | None:
    """What is wrong with a cached warm start (its last checkpoint's weights), or None."""
    from workbench.training.checkpoints import checkpoint_problem, latest_checkpoint

    ckpt = latest_checkpoint(target)
    if ckpt is None:
        return f"{target} holds no checkpoint"
    return checkpoint_problem(ckpt, ("policy.safetensors",))
