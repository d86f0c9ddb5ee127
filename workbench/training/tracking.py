"""What a run shows outside its own files: experiment trackers (`report_to`) and the rollout dump (`rollouts.jsonl`).

Trackers come from accelerate's registry (`accelerate.tracking.LOGGER_TYPE_TO_CLASS`: tensorboard, trackio, wandb,
mlflow, comet_ml, aim, clearml, dvclive, swanlab), so a researcher who knows `report_to` from TRL or transformers finds
the same names here. Each step they receive the same scalars as `metrics.jsonl`, and a table of a few sampled thoughts
(tensorboard: a markdown table in its Text tab; trackio / wandb: their table type). Trackers that keep files
(tensorboard, trackio) keep them inside the run directory, under `tracking/`, so a run stays one folder: trackio's
database is `tracking/trackio/<run_name>.db` (its project is the run's name), shown by
`TRACKIO_DIR=<run>/tracking/trackio trackio show --project <run_name>`. A TRACKIO_DIR set before the run is kept.

`rollouts.jsonl` holds every sampled thought of every step (one JSON object each), appended as the step ends so a
crash loses at most the step it happened in, and capped in size (`rollouts_max_mb`): once the cap is reached the
file stops growing and says so in train.log.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.run_dirs import read_jsonl_rows

NO_TRACKING = ("none", "")
# columns of the per-step table the trackers show (rollouts.jsonl keeps every field)
TABLE_COLUMNS = ("position", "context_tail", "thought", "reward", "content_gain", "advantage", "length", "closed_by")


def tracker_names(report_to: str | Sequence[str]) -> list[str]:
    """`report_to` as a list of tracker names: 'none' -> [], 'tensorboard' -> ['tensorboard'], 'all' -> every
    tracker accelerate finds installed. Unknown names are a one-line error naming the known ones."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    names = [str(n).strip().lower() for n in names if str(n).strip().lower() not in NO_TRACKING]
    if not names:
        return []
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    if names == ["all"]:
        return [str(t) for t in get_available_trackers()]
    unknown = [n for n in names if n not in LOGGER_TYPE_TO_CLASS]
    if unknown:
        raise WorkbenchError(
            f"report_to: unknown tracker {', '.join(unknown)}; use none, all or any of "
            f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))}"
        )
    return names


class Trackers:
    """The run's experiment trackers (possibly none): start, scalars per step, a thought table per step, finish."""

    def __init__(
        self,
        names: Sequence[str],
        run_name: str,
        run_dir: Path,
        config: dict[str, Any],
        note: Callable[[str], None] = print,
    ) -> None:
        self.names = list(names)
        self.trackers: list[Any] = []
        self.note = note
        self._trackio_env: tuple[str | None] | None = None  # TRACKIO_DIR as it was before this run set it
        if not self.names:
            return
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        logging_dir = Path(run_dir) / "tracking"
        logging_dir.mkdir(parents=True, exist_ok=True)
        if "trackio" in self.names:
            self._trackio_env = (os.environ.get("TRACKIO_DIR"),)
            trackio_dir = _use_trackio_dir(logging_dir / "trackio")
        for name in self.names:
            cls = LOGGER_TYPE_TO_CLASS[name]
            try:
                tracker = (
                    cls(run_name, logging_dir=str(logging_dir)) if cls.requires_logging_directory else cls(run_name)
                )
                tracker.start()
                tracker.store_init_configuration(_flat_config(config))
            except ImportError as exc:
                raise WorkbenchError(
                    f"report_to {name}: its package is not installed ({exc}); pip install {name} "
                    "(tensorboard is in the workbench's `track` extra)"
                ) from exc
            self.trackers.append(tracker)
        note(f"tracking with {', '.join(self.names)} in {logging_dir}")
        if "trackio" in self.names:
            note(f"trackio dashboard: TRACKIO_DIR={trackio_dir} trackio show --project {run_name}")

    def log(self, row: dict[str, Any], step: int) -> None:
        """The step's numbers, as metrics.jsonl has them (non-numbers and NaNs left out: trackers reject them)."""
        scalars = {
            k: float(v)
            for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        for tracker in self.trackers:
            tracker.log(scalars, step=step)

    def log_thoughts(self, records: list[dict[str, Any]], step: int) -> None:
        """A table of the step's first sampled thoughts (the rollout browser of notebook 04 shows them all)."""
        if not records or not self.trackers:
            return
        rows = [[_cell(r.get(c)) for c in TABLE_COLUMNS] for r in records]
        for name, tracker in zip(self.names, self.trackers):
            if name == "tensorboard":
                tracker.log({"rollouts/thoughts": markdown_table(TABLE_COLUMNS, rows)}, step=step)
            elif name == "trackio":
                import trackio

                tracker.log({"rollouts/thoughts": trackio.Table(columns=list(TABLE_COLUMNS), data=rows)}, step=step)
            elif hasattr(tracker, "log_table"):  # wandb, and any tracker that takes tables
                tracker.log_table("rollouts/thoughts", columns=list(TABLE_COLUMNS), data=rows, step=step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []
        if self._trackio_env is not None:  # the next run in this process (a notebook) chooses its own directory
            (before,) = self._trackio_env
            if before is None:
                os.environ.pop("TRACKIO_DIR", None)
            else:
                os.environ["TRACKIO_DIR"] = before
            self._trackio_env = None


_TRACKIO_DIRS_SET: set[str] = set()  # the TRACKIO_DIR values this process set (any other one is the user's: kept)


def _use_trackio_dir(run_trackio_dir: Path) -> Path:
    """Point trackio's local database at the run (unless the user set TRACKIO_DIR); returns the directory used.

    trackio reads TRACKIO_DIR once, when it is first imported (`trackio.utils.TRACKIO_DIR`, MEDIA_DIR and
    ARTIFACTS_DIR, which its modules copy with `from trackio.utils import ...`). Setting the variable therefore moves
    only the first run of a process; a second run in the same process (a notebook) would write into the first
    run's database. So where trackio is already imported, its copies of these paths are moved as well."""
    current = os.environ.get("TRACKIO_DIR")
    if current and current not in _TRACKIO_DIRS_SET:
        target = Path(current)  # the user's choice, e.g. one database for many runs
    else:
        target = Path(run_trackio_dir).absolute()
        _TRACKIO_DIRS_SET.add(str(target))
    os.environ["TRACKIO_DIR"] = str(target)
    utils = sys.modules.get("trackio.utils")
    if utils is not None and Path(utils.TRACKIO_DIR) != target:
        moved = {
            name: (getattr(utils, name), target / sub)
            for name, sub in (("TRACKIO_DIR", ""), ("MEDIA_DIR", "media"), ("ARTIFACTS_DIR", "artifacts"))
        }
        for module_name, module in list(sys.modules.items()):
            if module is None or not (module_name == "trackio" or module_name.startswith("trackio.")):
                continue
            for name, (old, new) in moved.items():
                if getattr(module, name, None) == old:
                    setattr(module, name, new)
    return target


def _flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters as trackers take them (bool, str, int, float): lists and None become strings."""
    return {k: v if isinstance(v, (bool, str, int, float)) else json.dumps(v) for k, v in config.items()}


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    return value


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table (TensorBoard's Text tab renders it); pipes and newlines inside cells are escaped."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", "⏎")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class RolloutLog:
    """`rollouts.jsonl`: one JSON object per sampled thought, appended step by step, at most `max_mb` megabytes."""

    def __init__(self, path: Path, max_mb: float, note: Callable[[str], None] = print) -> None:
        self.path = Path(path)
        self.max_bytes = int(max_mb * 1_000_000)
        self.note = note
        self.full = False

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def append(self, records: list[dict[str, Any]]) -> int:
        """Append what fits under the cap; returns how many records were written."""
        if not self.enabled or self.full or not records:
            return 0
        size = self.path.stat().st_size if self.path.exists() else 0
        lines = []
        for record in records:
            line = json.dumps(record, ensure_ascii=False) + "\n"
            if size + len(line.encode()) > self.max_bytes:
                self.full = True
                self.note(
                    f"rollouts.jsonl reached rollouts_max_mb ({self.max_bytes / 1e6:g} MB) at step "
                    f"{record.get('step')}; later thoughts are not dumped (metrics.jsonl goes on)"
                )
                break
            lines.append(line)
            size += len(line.encode())
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(lines))
            fh.flush()
        return len(lines)

    def truncate_after(self, step: int) -> None:
        """On resume: drop the thoughts of steps after the checkpoint (they will be sampled again, identically)."""
        if not self.path.exists():
            return
        kept = [row for row in read_jsonl_rows(self.path) if row.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept), encoding="utf-8")


def read_rollouts(run_dir: str | Path) -> list[dict[str, Any]]:
    """The thoughts a run dumped (rollouts.jsonl; a half-written last line from a killed run is skipped)."""
    path = Path(run_dir) / "rollouts.jsonl"
    if not path.exists():
        raise WorkbenchError(
            f"{run_dir} has no rollouts.jsonl (an RLP run writes one; rollouts_max_mb: 0 turns it off)"
        )
    return read_jsonl_rows(path)
