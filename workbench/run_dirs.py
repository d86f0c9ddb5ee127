"""Run directories: every run writes its config, seed, versions, metrics and outputs in one place."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

RUNS_ROOT = "runs"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
HEADLESS_ENV = "WORKBENCH_HEADLESS"  # "1" in the kernels `workbench run` and `report` start: no one is there to type


def headless() -> bool:
    """Whether this notebook kernel was started by `workbench run`/`report`: interactive widgets would go unused
    (and an HTML export cannot show them), so cells show a static view instead."""
    return os.environ.get(HEADLESS_ENV) == "1"


def runs_root() -> Path:
    """Where run directories go: $WORKBENCH_RUNS, else the project's runs/ folder (in a source checkout), else
    ./runs. Never relative to a kernel's working directory: a notebook opened from notebooks/ in JupyterLab
    writes to the same runs/ as `workbench run` from the repository root."""
    env = os.environ.get("WORKBENCH_RUNS")
    if env:
        return Path(env).expanduser().resolve()
    if (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "workbench").is_dir():
        return PROJECT_ROOT / RUNS_ROOT
    return Path.cwd().resolve() / RUNS_ROOT


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_jsonable))
    tmp.replace(path)
    return path


def read_jsonl_rows(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a file a run appends to line by line (metrics.jsonl, rollouts.jsonl); a half-written line
    from a killed run is skipped; a missing file has none."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def new_run_dir(name: str, root: str | Path | None = None) -> Path:
    """runs/<name>-<UTC timestamp>[-n], created empty."""
    root = Path(root).expanduser() if root else runs_root()
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        candidate = root / (f"{name}-{stamp}" + (f"-{n}" if n else ""))
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory under {root}")


def machine_name() -> str:
    """What a benchmark ran on: the GPU (and the CPU beside it), or the CPU and its torch threads."""
    import torch

    from workbench.hardware import cpu_model

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (+ {cpu_model()})"
    return f"{cpu_model()}, {torch.get_num_threads()} torch threads"


def package_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each package that is installed."""
    out = {}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def versions() -> dict[str, str]:
    """Versions of everything that can change a number."""
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine()}
    out.update(
        package_versions(("rlp-workbench", "torch", "transformers", "numpy", "pandas", "papermill", "plotly", "gguf"))
    )
    try:
        import torch

        out["torch_threads"] = str(torch.get_num_threads())
        out["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        pass
    return out


def save_metrics(run_dir: str | Path | None, metrics: dict[str, Any]) -> dict[str, Any]:
    """Merge `metrics` into <run_dir>/metrics.json (a no-op without a run directory, e.g. in JupyterLab)."""
    if not run_dir:
        return metrics
    from workbench.work import METER

    path = Path(run_dir) / "metrics.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(METER.as_metrics())  # the counted work of this process so far (a notebook's: its kernel's)
    merged.update(metrics)
    write_json(path, merged)
    return merged
