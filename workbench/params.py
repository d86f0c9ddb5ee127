"""Notebook parameters: one schema, checked before a kernel starts and again inside the notebook.

Every curated notebook's `parameters` cell uses names from `SCHEMA`; a value that fails its check
stops the run with a one-line message instead of a traceback halfway through a notebook.
"""

from __future__ import annotations

from typing import Any, Callable

from workbench.data import find_document, parse_positions
from workbench.errors import WorkbenchError
from workbench.models import BUNDLED, DTYPES


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
    if value not in DTYPES:
        raise WorkbenchError(f"expected one of {', '.join(DTYPES)}, got {value!r}")
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
    "run_dir": _str,
}


def validate(params: dict[str, Any], known: set[str] | None = None) -> dict[str, Any]:
    """Check every parameter; `known` (a notebook's own parameter names) rejects unknown names."""
    if known is not None:
        unknown = sorted(set(params) - known)
        if unknown:
            raise WorkbenchError(f"unknown parameter(s) {', '.join(unknown)}; this notebook takes: {', '.join(sorted(known))}")
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
