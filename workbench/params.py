"""Notebook parameters: one schema, checked before a kernel starts and again inside the notebook.

Every curated notebook's `parameters` cell uses names from `SCHEMA`; a value that fails its check
stops the run with a one-line message instead of a traceback halfway through a notebook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workbench.data import find_document, parse_positions
from workbench.errors import WorkbenchError
from workbench.hardware import DTYPE_NAMES
from workbench.models import BUNDLED


def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise WorkbenchError(f"expected an integer, got {value!r}")
        if value < lo or (hi is not None and value > hi):
            raise WorkbenchError(f"expected an integer in [{lo}, {hi if hi is not None else 'inf'}], got {value}")
        return value

    return check


def _float(lo: float, hi: float, lo_open: bool = False) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WorkbenchError(f"expected a number, got {value!r}")
        if not (lo < value if lo_open else lo <= value) or value > hi:
            raise WorkbenchError(f"expected a number in {'(' if lo_open else '['}{lo}, {hi}], got {value}")
        return float(value)

    return check


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise WorkbenchError(f"expected a string, got {value!r}")
    return value


def _model(value: Any) -> str:
    value = _str(value)
    if value.startswith("warm:") and len(value) > 5:  # the thinking-ready model of a base model
        _model(value[5:])
        return value
    if value in BUNDLED or "/" in value or value.endswith(".gguf"):
        return value
    raise WorkbenchError(f"unknown model {value!r}; bundled: {', '.join(BUNDLED)}, or a hub id / local path")


def _document(value: Any) -> str:
    find_document(_str(value))
    return value


def _positions(value: Any) -> str:
    return str(parse_positions(_str(value)))


def _designs(value: Any) -> str:
    from workbench.compare import parse_designs

    parse_designs(_str(value))
    return value


def _dtype(value: Any) -> str:
    if value not in DTYPE_NAMES:
        raise WorkbenchError(f"expected one of {', '.join(DTYPE_NAMES)}, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise WorkbenchError(f"expected True or False, got {value!r}")
    return value


def _config_file(value: Any) -> str:
    from workbench.training.configs import load_config, resolve_config_path

    if not resolve_config_path(_str(value)).is_file():
        raise WorkbenchError(f"config file {value!r} not found (paths are relative to the repository root)")

    load_config(value)
    return value


def _run_dir_or_empty(value: Any) -> str:
    from pathlib import Path

    value = _str(value)
    if value and not (Path(value) / "config.yaml").is_file():
        raise WorkbenchError(f"{value!r} is not a training run directory (no config.yaml)")
    return value


def _list_of(item: Callable[[Any], Any]) -> Callable[[Any], list]:
    def check(value: Any) -> list:
        if not isinstance(value, (list, tuple)) or not value:
            raise WorkbenchError(f"expected a non-empty list, got {value!r}")
        return [item(v) for v in value]

    return check


SCHEMA: dict[str, Callable[[Any], Any]] = {
    "model": _model,
    "document": _document,
    "positions": _positions,
    "sweep_designs": _designs,
    "G": _int(1, 256),
    "thought_tokens": _int(0, 4096),
    "temperature": _float(0.0, 100.0),
    "top_p": _float(0.0, 1.0, lo_open=True),
    "seed": _int(0, 2**32 - 1),
    "dtype": _dtype,
    "max_tokens": _int(2, 100_000),
    "sweep_temperatures": _list_of(_float(0.0, 100.0)),
    "sweep_budgets": _list_of(_int(0, 4096)),
    "sweep_G": _list_of(_int(1, 256)),
    "designs": _designs,
    "probe_positions": _positions,
    "run_dir": _str,
    # the thinking-ready model (the warm start on the thinking corpus)
    "thinking_ready": _bool,
    "warm_maps": _bool,
    "thinking_document": _document,
    "warm_start_steps": _int(1, 100_000),
    "thinking_steps": _int(1, 100_000),
    "probe_worksheets": _int(1, 200),
    # training and evaluation notebooks (04, 05)
    "config": _config_file,
    "max_steps": _int(1, 100_000),
    "docs_per_step": _int(1, 4096),
    "positions_per_doc": _int(1, 4096),
    "learning_rate": _float(0.0, 1.0, lo_open=True),
    "background": _bool,
    "baseline": _bool,
    "guard_experiment": _bool,
    "guard_steps": _int(1, 10_000),
    "guard_learning_rate": _float(0.0, 1.0, lo_open=True),
    "guard_thought_tokens": _int(1, 4096),
    "arena": _bool,
    "arena_designs": _designs,
    "arena_steps": _int(1, 10_000),
    "rlp_run": _run_dir_or_empty,
    "ntp_run": _run_dir_or_empty,
    "rlp_warm_run": _run_dir_or_empty,
    "train_steps": _int(1, 100_000),
    "lm_eval_tasks": _str,
    "lm_eval_limit": _int(0, 10_000_000),
}


def validate(params: dict[str, Any], known: set[str] | None = None) -> dict[str, Any]:
    """Check every parameter; `known` (a notebook's own parameter names) rejects unknown names."""
    if known is not None:
        unknown = sorted(set(params) - known)
        if unknown:
            raise WorkbenchError(
                f"unknown parameter(s) {', '.join(unknown)}; this notebook takes: {', '.join(sorted(known))}"
            )
    out = {}
    for name, value in params.items():
        check = SCHEMA.get(name)
        if check is None:
            out[name] = value
            continue
        try:
            out[name] = check(value)
        except WorkbenchError as exc:
            raise WorkbenchError(f"parameter {name}: {exc}") from None
    return out
