"""WarmStartConfig: next-token training on text in which thoughts already appear (the thinking-ready model)."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import WorkbenchError
from workbench.training.config import check_int, help_field
from workbench.training.ntp_config import NTPConfig

THOUGHT_STYLES = ("scratch", "restate", "slip")


@dataclass
class WarmStartConfig(NTPConfig):
    trainer: str = help_field("warmstart", "Which trainer: warmstart.")
    run_name: str = help_field("warmstart", "Name of the run; the run directory is runs/<run_name>-<UTC time>.")
    train_data: str = help_field(
        "thinking:train",
        "Training documents; their JSONL 'thoughts' are spliced in as <think> ... </think> (the "
        "generated corpus of workbench/thinking_corpus.py: thinking:train).",
    )
    eval_data: str = help_field("thinking:eval", "Held-out documents for the eval metrics ('' to skip).")
    eval_positions: str = help_field("marked", "Positions of the held-out reward map: the marked answers by default.")
    thought_styles: list[str] = help_field(
        ["scratch", "restate"],
        "Which thought styles of the corpus are spliced in (scratch: a correct scratchpad; "
        "restate: a restatement that computes nothing; slip: a scratchpad with one mistake - without 'slip', the "
        "answer's correct scratchpad stands in for it). [] trains on the plain text: the no-thought control.",
    )
    read_only_styles: list[str] = help_field(
        [],
        "Thought styles the model reads but does not learn to write: the loss skips their thought tokens and "
        "still trains the answer after them. With slips read-only the model learns that a scratchpad's result is "
        "sometimes wrong (so a wrong scratchpad of its own costs fewer nats) without learning to make mistakes.",
    )
    loss_on: str = help_field(
        "all",
        "Which tokens the next-token loss trains: 'all' (every token of the documents) or 'thoughts' (the spliced "
        "markers and thoughts, and every marked answer: what writing and reading a thought needs; the LM head runs on "
        "those rows only, ~20 % faster on a CPU, but the model drifts further on ordinary text).",
    )
    train_embeddings: bool = help_field(
        False,
        "Also train the token embedding and the LM head (tied in both bundled models; 60 % of Gemma 3 270M's "
        "weights, whose gradient and optimizer update dominate a CPU step). Off: the transformer layers learn.",
    )
    docs_per_step: int = help_field(
        8, "Documents per optimizer step; the loss is the mean next-token NLL over their tokens."
    )
    learning_rate: float = help_field(5e-5, "Peak learning rate (a warm start moves further than RLP's 1e-6).")
    max_doc_tokens: int = help_field(256, "Documents are cut to this many tokens (BOS and thoughts included).")

    def validate(self) -> WarmStartConfig:
        super().validate()
        check_int(self, "docs_per_step", 1)
        if self.loss_on not in ("thoughts", "all"):
            raise WorkbenchError(f"loss_on must be 'thoughts' or 'all', got {self.loss_on!r}")
        for name in ("thought_styles", "read_only_styles"):
            value = getattr(self, name)
            if not isinstance(value, list) or any(s not in THOUGHT_STYLES for s in value):
                raise WorkbenchError(f"{name} must be a list drawn from {', '.join(THOUGHT_STYLES)}, got {value!r}")
        return self
