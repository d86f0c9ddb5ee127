"""NTPConfig: continued pretraining (plain next-token loss), the baseline RLP is compared against."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import WorkbenchError
from workbench.training.config import TrainConfig, check_int, help_field


@dataclass
class NTPConfig(TrainConfig):
    trainer: str = help_field("ntp", "Which trainer: ntp.")
    run_name: str = help_field("ntp", "Name of the run; the run directory is runs/<run_name>-<UTC time>.")
    docs_per_step: int = help_field(
        2, "Documents per optimizer step; the loss is the mean next-token NLL over their tokens."
    )
    match_run: str | None = help_field(
        None,
        "Run directory of an RLP run to match in compute (the paper's compute-matched comparison): the run stops once "
        "it has used as much as that run, measured as `match` says. max_steps still caps the run.",
    )
    match: str = help_field(
        "flops",
        "What match_run matches: 'flops' (every forward of every process, estimated FLOPs; workbench/training/flops.py) or "
        "'tokens' (the paper's appendix: T_flop = rollout tokens + input tokens of the RLP run, against this run's "
        "training tokens; the paper does not say whether its l_seq is the context or the completion length, so each "
        "rollout's whole sequence - context, markers and thought - is counted).",
    )
    match_flops_of: str | None = help_field(None, "Deprecated spelling of match_run with match: flops.")

    def validate(self) -> NTPConfig:
        super().validate()
        check_int(self, "docs_per_step", 1)
        if self.match_flops_of:
            if self.match_run and self.match_run != self.match_flops_of:
                raise WorkbenchError("set match_run (match_flops_of is its old spelling), not both")
            import warnings

            warnings.warn(
                "match_flops_of is deprecated: use match_run (and match: flops)", DeprecationWarning, stacklevel=2
            )
            self.match_run, self.match_flops_of, self.match = self.match_flops_of, None, "flops"
        if self.match not in ("flops", "tokens"):
            raise WorkbenchError(f"match must be 'flops' or 'tokens', got {self.match!r}")
        if self.match_run and self.flops_budget:
            raise WorkbenchError("set match_run or flops_budget, not both")
        return self
