"""NTPConfig: continued pretraining (plain next-token loss), the baseline RLP is compared against."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import WorkbenchError
from workbench.train_config import TrainConfig, _check_int, help_field


@dataclass
class NTPConfig(TrainConfig):
    trainer: str = help_field("ntp", "Which trainer: ntp.")
    run_name: str = help_field("ntp", "Name of the run; the run directory is runs/<run_name>-<UTC time>.")
    docs_per_step: int = help_field(2, "Documents per optimizer step; the loss is the mean next-token NLL over their tokens.")
    match_flops_of: str | None = help_field(
        None,
        "Run directory of an RLP run: train until this run has used as many (estimated) FLOPs as that one "
        "(the paper's compute-matched comparison). max_steps still caps the run.",
    )
    flops_budget: float | None = help_field(None, "Stop once this many training FLOPs are used (estimated; see workbench/flops.py).")

    def validate(self) -> "NTPConfig":
        super().validate()
        _check_int(self, "docs_per_step", 1)
        if self.match_flops_of and self.flops_budget:
            raise WorkbenchError("set match_flops_of or flops_budget, not both")
        if self.flops_budget is not None and not self.flops_budget > 0:
            raise WorkbenchError(f"flops_budget must be > 0, got {self.flops_budget!r}")
        return self
