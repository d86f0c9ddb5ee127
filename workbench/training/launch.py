"""Starting training runs: in this process (small runs, tests) or as a background process (notebooks).

run = start_background("configs/rlp_tiny.yaml")     # returns at once
run.metrics()                                         # rows of metrics.jsonl so far
run.stop()                                            # graceful: finishes the step, checkpoints
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.training.config import TrainConfig
from workbench.training.configs import config_from_dict, load_config
from workbench.training.ntp_trainer import NTPTrainer
from workbench.training.rlp_trainer import RLPTrainer
from workbench.training.trainer import Trainer, read_metrics
from workbench.training.warm_start import resolve_model_name
from workbench.training.warmstart_trainer import WarmStartTrainer

TRAINERS: tuple[type[Trainer], ...] = (RLPTrainer, NTPTrainer, WarmStartTrainer)  # the kinds' names: configs.CONFIGS


def trainer_for(config: TrainConfig, resume: bool | str = False, **kwargs: Any) -> Trainer:
    """The trainer of a config (by its class: RLPConfig -> RLPTrainer, ...). A `warm:BASE` model is trained first
    when it is not cached yet (saying how long it will take)."""
    by_config = {trainer.config_class: trainer for trainer in TRAINERS}
    if type(config) not in by_config:
        raise WorkbenchError(f"no trainer for {type(config).__name__}")
    resolve_model_name(config.model, kwargs.get("log") or (lambda msg: print(msg, file=sys.stderr, flush=True)))
    return by_config[type(config)](config, resume=resume, **kwargs)


def train(
    config: TrainConfig | str | Path,
    resume: bool | str = False,
    log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Run a config to the end in this process; returns the summary (also in <run_dir>/summary.json). The run's log
    lines go to `log`, by default standard output: in a notebook they read as output, not as red stderr boxes
    (`workbench train` writes them to stderr)."""
    if not isinstance(config, TrainConfig):
        config = load_config(config, overrides or None)
    elif overrides:
        config = config_from_dict({**config.to_dict(), **overrides})
    trainer = trainer_for(config, resume=resume, log=log or (lambda msg: print(msg, flush=True)))
    try:
        summary = trainer.train()
        summary["run_dir"] = str(trainer.run_dir)
    finally:
        trainer.close()  # a notebook may train several runs in one kernel: free each one's optimizer state
    return summary


@dataclass
class BackgroundRun:
    """A `workbench train` process running on its own; its run directory is the only channel."""

    process: subprocess.Popen
    run_dir: Path
    log_path: Path
    max_steps: int = 0  # the config's step count (0: unknown), for the live chart's estimate
    _counted: bool = False  # its FLOPs were added to this process's counted work (workbench/work.py)

    def running(self) -> bool:
        return self.process.poll() is None

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.run_dir)

    def stop(self, wait: float = 600.0) -> int | None:
        """Ask the run to stop after its current step (it writes a checkpoint and its summary)."""
        (self.run_dir / "STOP").touch()
        try:
            return self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None

    def wait(self, timeout: float | None = None) -> int:
        code = self.process.wait(timeout=timeout)
        if code != 0:
            tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise WorkbenchError(f"training process exited with {code}; end of its log:\n{tail}")
        if not self._counted:  # its work, as the run counted it, joins this process's counted work
            import json

            from workbench import work

            summary = self.run_dir / "summary.json"
            if summary.exists():  # its training FLOPs and its evaluations' forwards (counted in that process)
                done = json.loads(summary.read_text())
                work.add_training_run(done.get("total_flops", 0.0), done.get("total_work_flops_evaluation", 0.0))
            self._counted = True
        return code


def start_background(
    config_path: str | Path, run_dir: str | Path, extra_args: list[str] | None = None
) -> BackgroundRun:
    """Launch `python -m workbench.cli train CONFIG --output-dir RUN_DIR` and return at once."""
    config_path, run_dir = Path(config_path), Path(run_dir)
    config = load_config(config_path)  # fail here, not in the background, on a bad config
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "process.log"
    cmd = [
        sys.executable,
        "-m",
        "workbench.cli",
        "train",
        str(config_path),
        "--output-dir",
        str(run_dir),
        *(extra_args or []),
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"})
    return BackgroundRun(proc, run_dir, log_path, config.max_steps)
