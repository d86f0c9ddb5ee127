"""Estimated FLOPs, so RLP and next-token training can be compared at matched compute (RLP paper, Table 4).

The usual estimate: a forward pass costs 2 FLOPs per parameter per token, a training step 3x that
(forward + backward). Two refinements matter for small models with big vocabularies (Gemma 3 270M:
168M of its 268M parameters are the 262k x 640 embedding):

- the input embedding is a lookup, not a matmul: it costs nothing;
- the LM head (V x H) runs only at positions whose logits are computed, which RLP keeps few.

Attention's quadratic term is left out (contexts here are <= 2k tokens, where it is small).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.work import body_parameters


@dataclass(frozen=True)
class FlopCounter:
    body_params: int  # parameters every token passes through (all but the input embedding and the LM head)
    head_params: int  # V x H of the LM head

    def forward(self, tokens: int, logit_positions: int) -> float:
        return 2.0 * self.body_params * tokens + 2.0 * self.head_params * logit_positions

    def train(self, tokens: int, logit_positions: int) -> float:
        return 3.0 * self.forward(tokens, logit_positions)


def flop_counter(model: torch.nn.Module) -> FlopCounter:
    return FlopCounter(
        body_params=body_parameters(model), head_params=int(model.get_output_embeddings().weight.numel())
    )


COMPUTE_KINDS = ("teacher", "sample", "score", "design", "loss", "probe")
"""What a training step runs a model for: the teacher's no-think pass; sampling thoughts (the prefix encoding and the
decode loop, on either backend); scoring (the with-thought and empty-thought scores when they are not read off the
sampling pass); a reward design's extra passes; the loss pass (forward + backward); a diagnostic probe (vLLM sync)."""


@dataclass
class ComputeMeter:
    """Counts every forward a step runs, by kind, as (tokens fed, LM-head rows), and turns them into FLOPs.

    Inference passes cost `FlopCounter.forward`, training passes (forward + backward) `FlopCounter.train`. The step's
    row in metrics.jsonl gets, per kind, `fwd_tokens_<kind>`, `head_rows_<kind>` and `flops_<kind>`, plus
    `flops_step`; several processes' rows are summed (`trainer.merge_process_rows`), so the cumulative `flops` counts
    every process."""

    counter: FlopCounter

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tokens = {k: 0 for k in COMPUTE_KINDS}
        self.head_rows = {k: 0 for k in COMPUTE_KINDS}
        self.flops = {k: 0.0 for k in COMPUTE_KINDS}

    def forward(self, kind: str, tokens: int, head_rows: int) -> None:
        self.tokens[kind] += int(tokens)
        self.head_rows[kind] += int(head_rows)
        self.flops[kind] += self.counter.forward(int(tokens), int(head_rows))

    def train(self, kind: str, tokens: int, head_rows: int) -> None:
        self.tokens[kind] += int(tokens)
        self.head_rows[kind] += int(head_rows)
        self.flops[kind] += self.counter.train(int(tokens), int(head_rows))

    def add_count(self, kind: str, count) -> None:
        """A `engine.thought.ForwardCount` (read and reset) as inference passes of `kind`."""
        tokens, rows = count.take()
        self.forward(kind, tokens, rows)

    def step_metrics(self) -> dict[str, float]:
        """This step's counts (then zeroed for the next step)."""
        out: dict[str, float] = {}
        for k in COMPUTE_KINDS:
            if self.tokens[k] or self.head_rows[k]:
                out[f"fwd_tokens_{k}"] = self.tokens[k]
                out[f"head_rows_{k}"] = self.head_rows[k]
                out[f"flops_{k}"] = self.flops[k]
        out["flops_step"] = float(sum(self.flops.values()))
        self.reset()
        return out
