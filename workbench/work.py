"""Counted work: what a notebook (or any process) asked its models to compute, in units no machine changes.

Every model `load_model` returns is metered: a hook on its decoder counts the tokens fed through it (padding included:
it is computed), a hook on its LM head and the engine's chunked head (`engine.token_sampling.LMHead`) count the rows
whose logits were computed. FLOPs follow the usual estimate, 2 x body parameters per token + 2 x V x d per head row
(`training/flops.py` counts training steps the same way). A training run adds its own FLOP count (forward + backward,
every kind of pass, from its summary) instead of its forwards, which are paused while it trains in this process.

    from workbench import work
    work.reset()
    ...                                 # sample, score, evaluate, train
    work.METER.as_metrics()             # {"work_tokens": ..., "work_head_rows": ..., "work_flops": ...}

A notebook's `metrics.json` records this (`run_dirs.save_metrics`), and tests/test_notebooks.py holds each curated
notebook to the budget written in notebooks/work_budgets.json: a change that adds work to a notebook fails there
until the budget is raised on purpose.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class WorkMeter:
    tokens: int = 0  # tokens fed through a decoder (forward passes in this process, outside training runs)
    head_rows: int = 0  # rows of LM-head logits computed
    forward_flops: float = 0.0  # the FLOPs of those forwards
    training_flops: float = 0.0  # training runs' own counts (summary.json total_flops), in or out of this process
    training_runs: int = 0
    paused: int = 0

    def as_metrics(self) -> dict[str, float]:
        return {
            "work_tokens": self.tokens,
            "work_head_rows": self.head_rows,
            "work_forward_flops": self.forward_flops,
            "work_training_flops": self.training_flops,
            "work_training_runs": self.training_runs,
            "work_flops": self.forward_flops + self.training_flops,
        }


METER = WorkMeter()


def reset() -> None:
    global METER
    METER = WorkMeter()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Forwards inside are not counted (a training run in this process: its own count is added instead)."""
    METER.paused += 1
    try:
        yield
    finally:
        METER.paused -= 1


def count_tokens(tokens: int, body_params: int) -> None:
    if not METER.paused:
        METER.tokens += int(tokens)
        METER.forward_flops += 2.0 * body_params * tokens


def count_head(rows: int, weight: torch.Tensor) -> None:
    if not METER.paused:
        METER.head_rows += int(rows)
        METER.forward_flops += 2.0 * weight.numel() * rows


def add_training_run(flops: float, evaluation_flops: float = 0.0) -> None:
    """A finished training run's FLOPs (every forward and backward of every step, `training.flops.ComputeMeter`), and
    the forwards of its held-out evaluations when another process counted them (its summary's
    `total_work_flops_evaluation`)."""
    METER.training_flops += float(flops)
    METER.forward_flops += float(evaluation_flops)
    METER.training_runs += 1


def body_parameters(model: torch.nn.Module) -> int:
    """Parameters every token passes through: all but the input embedding and the LM head (a tied head counted once)."""
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    return int(total - embedding.numel() - (0 if head is embedding else head.numel()))


def meter_model(model: torch.nn.Module) -> torch.nn.Module:
    """Count this model's forwards from now on (hooks on its decoder and its LM head; idempotent). A deep copy (an
    inference copy, the EMA teacher) keeps the hooks: its forwards count too."""
    decoder = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is None or decoder is model or head is None or getattr(model, "_work_metered", False):
        return model
    body = body_parameters(model)

    def on_decoder(module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None and kwargs.get("inputs_embeds") is not None:
            count_tokens(kwargs["inputs_embeds"].shape[:-1].numel(), body)
        elif ids is not None:
            count_tokens(ids.numel(), body)

    def on_head(module, args, output) -> None:
        count_head(output.numel() // output.shape[-1], module.weight)

    decoder.register_forward_pre_hook(on_decoder, with_kwargs=True)
    head.register_forward_hook(on_head)
    model._work_metered = True
    return model
