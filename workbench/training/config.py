"""The fields every trainer shares: `TrainConfig`, a dataclass with a help string per field. Each trainer's own
config subclasses it beside the trainer (`rlp_config.py` beside `rlp_trainer.py`); `training.configs` reads YAML into
the right one (`workbench train --help-config rlp` prints the fields)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from workbench.errors import WorkbenchError


def help_field(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help string (shown by `workbench train --help-config`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class TrainConfig:
    """Fields every trainer shares: model, data, optimizer, schedule, run directory, checkpoints."""

    trainer: str = help_field("", "Which trainer: rlp, ntp or warmstart (set by the subclass).")
    run_name: str = help_field("train", "Name of the run; the run directory is runs/<run_name>-<UTC time>.")
    output_dir: str | None = help_field(
        None, "Run directory to write (and to resume from with --resume); default: a new runs/<run_name>-<time>."
    )
    model: str = help_field("gemma3-270m", "Policy model: bundled short name, local directory, .gguf file or hub id.")
    trust_remote_code: bool = help_field(False, "Allow a hub model's own Python code. Off unless you trust it.")
    seed: int = help_field(0, "Seed of everything random: data order, positions, thoughts. Same seed, same numbers.")
    train_data: str = help_field(
        "corpus:train", "Training documents: corpus:train, corpus:eval, or a .txt/.jsonl file or directory."
    )
    eval_data: str = help_field("corpus:eval", "Held-out documents for the eval metrics ('' to skip).")
    max_doc_tokens: int = help_field(512, "Documents are cut to this many tokens (BOS included).")
    max_steps: int = help_field(10, "Optimizer steps (the NTP trainer may stop earlier at its FLOP budget).")
    learning_rate: float = help_field(1e-6, "Peak learning rate. RLP paper: constant 1e-6.")
    lr_scheduler: str = help_field(
        "constant", "transformers scheduler name: constant, constant_with_warmup, cosine, linear, cosine_with_min_lr."
    )
    min_learning_rate: float | None = help_field(
        None, "Floor of the 'cosine_with_min_lr' schedule (the paper's CPT baseline: 1e-6 decaying to 1e-7)."
    )
    warmup_steps: int = help_field(0, "Warm-up steps of the scheduler (ignored by 'constant').")
    weight_decay: float = help_field(0.0, "AdamW weight decay.")
    adam_betas: list[float] = help_field([0.9, 0.999], "AdamW betas.")
    max_grad_norm: float = help_field(1.0, "Gradient clipping by global norm (0 disables).")
    mixed_precision: str = help_field(
        "auto",
        "accelerate mixed precision of the training forward/backward over fp32 master weights: auto (bf16 where this "
        "machine computes bf16 natively, else no), no, bf16 or fp16.",
    )
    rollout_dtype: str = help_field(
        "auto",
        "dtype of the inference copies that sample thoughts and score: auto (bfloat16 where native - AMX CPUs, bf16 "
        "GPUs - else float32; bf16 runs a model 2-5x slower than float32 on an AVX2-only CPU), bfloat16, float32 or float16.",
    )
    micro_batch_rows: int = help_field(8, "Rows per forward/backward chunk (gradients accumulate over chunks).")
    train_embeddings: bool = help_field(
        True,
        "Train the token embedding and the LM head (tied in both bundled models; 60 % of Gemma 3 270M's weights). "
        "false freezes them, a labelled variant for RLP (the paper trains every weight): a smaller, less noisy update, "
        "and a CPU step skips the head's weight gradient and its optimizer update.",
    )
    peft: dict | None = help_field(
        None,
        "LoRA adapters with PEFT instead of training every weight, e.g. {r: 16, lora_alpha: 32} (fields r, "
        "lora_alpha, lora_dropout, target_modules (default all-linear), use_rslora). A labelled variant: the paper trains "
        "every weight. Checkpoints then hold the adapter only (MB, not GB); load_model(RUN) merges it into the base.",
    )
    flops_budget: float | None = help_field(
        None,
        "Stop once the run has used this many training FLOPs (every forward of every process, estimated as in "
        "workbench/training/flops.py). max_steps still caps the run.",
    )
    think_open: str = help_field(
        "<think>", "Opening marker of a thought, inserted as plain text (training and evaluation)."
    )
    think_close: str = help_field(
        "</think>", "Closing marker of a thought, inserted as plain text (training and evaluation)."
    )

    # -- the one evaluation (workbench/evaluation.py): the same for every trainer, so runs compare fairly ---------
    eval_every: int = help_field(
        5,
        "Evaluate on held-out data every K steps (and after the last; before the first unless eval_at_start is false).",
    )
    hacking_patience: int = help_field(
        2,
        "The reward-hacking monitor (workbench/training/monitor.py) warns once when the held-out reward is above its "
        "step-0 value and the answer accuracy after thinking below it, each by more than one SE, for this many "
        "evaluations in a row (train.log, the summary, a band on the charts). 0 turns it off. Changes no number.",
    )
    eval_at_start: bool = help_field(
        True,
        "Evaluate the starting model before step 1 (the 'before' of every curve). The warm start skips it: its start "
        "is the base model, whose thoughts never close and so run to the full budget (2 of its minutes on an AVX2 CPU).",
    )
    eval_docs: int = help_field(4, "How many held-out documents the eval reads (0 = all).")
    eval_positions: str = help_field("every:48", "Positions of the held-out reward map: all, every:K, random:N.")
    eval_G: int = help_field(2, "Thoughts per position in the held-out reward map (0 skips it).")
    eval_thought_tokens: int = help_field(32, "Thought budget of the held-out reward map (the same for every trainer).")
    eval_temperature: float = help_field(0.7, "Sampling temperature of held-out thoughts (paper: 0.7).")
    eval_top_p: float = help_field(1.0, "Nucleus of held-out thought sampling.")
    eval_min_thought_tokens: int = help_field(
        1, "Held-out thoughts have at least this many tokens (1: the paper's action space, |c| >= 1)."
    )
    eval_allow_eos: bool = help_field(True, "Whether EOS may end a held-out thought.")
    eval_seed: int = help_field(0, "Seed of the held-out positions and thoughts, independent of the training seed.")
    checkpoint_every: int = help_field(5, "Write a checkpoint every K steps (and at the end).")
    keep_last: int = help_field(2, "Checkpoints to keep; older ones are deleted after a new one is complete.")
    save_optimizer: bool = help_field(
        True,
        "Keep the optimizer state in checkpoints, which a resume needs. False keeps the weights only: for Gemma 3 "
        "270M 2 GB less to write per checkpoint (~7 s on a 2-core VM), but the run cannot be resumed.",
    )
    threads: int = help_field(
        0, "torch CPU threads (0 = torch's default). Results are bitwise reproducible at a fixed count."
    )
    progress: bool = help_field(True, "Show a progress bar.")
    report_to: str | list[str] = help_field(
        "none",
        "Experiment trackers that get every step's metrics and a table of sampled thoughts, by accelerate's "
        "names: none, tensorboard, trackio, wandb, mlflow, ... or all (every one installed). File-based trackers write "
        "into <run>/tracking/. tensorboard is in the `track` extra: tensorboard --logdir <run>/tracking.",
    )
    rollouts_max_mb: float = help_field(
        20.0,
        "Cap of <run>/rollouts.jsonl, the dump of every sampled thought (position, context tail, text, ids, "
        "reward, content gain, advantage, length, how it closed); 0 writes none.",
    )
    rollout_table_rows: int = help_field(
        16, "Sampled thoughts per step in the trackers' table (rollouts.jsonl has all)."
    )

    # -- validation ------------------------------------------------------------------------------

    def validate(self) -> TrainConfig:
        positive = ["max_doc_tokens", "micro_batch_rows", "eval_every", "checkpoint_every", "keep_last"]
        for name in positive:
            check_int(self, name, 1)
        for name in (
            "max_steps",
            "warmup_steps",
            "eval_docs",
            "eval_G",
            "threads",
            "seed",
            "eval_thought_tokens",
            "eval_min_thought_tokens",
            "eval_seed",
            "rollout_table_rows",
        ):
            check_int(self, name, 0)
        if self.eval_min_thought_tokens > self.eval_thought_tokens:
            raise WorkbenchError("eval_min_thought_tokens must not exceed eval_thought_tokens")
        if not (self.eval_temperature >= 0 and 0 < self.eval_top_p <= 1):
            raise WorkbenchError("eval_temperature must be >= 0 and eval_top_p in (0, 1]")
        if not self.think_open or not self.think_close:
            raise WorkbenchError("think_open and think_close must not be empty")
        if self.flops_budget is not None and not self.flops_budget > 0:
            raise WorkbenchError(f"flops_budget must be > 0, got {self.flops_budget!r}")
        if self.lr_scheduler == "cosine_with_min_lr" and self.min_learning_rate is None:
            raise WorkbenchError("lr_scheduler cosine_with_min_lr needs min_learning_rate")
        if self.min_learning_rate is not None and not 0 <= self.min_learning_rate <= self.learning_rate:
            raise WorkbenchError("min_learning_rate must be in [0, learning_rate]")
        if not (self.learning_rate > 0):
            raise WorkbenchError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise WorkbenchError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.rollout_dtype not in ("auto", "bfloat16", "float32", "float16"):
            raise WorkbenchError(
                f"rollout_dtype must be auto, bfloat16, float32 or float16, got {self.rollout_dtype!r}"
            )
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise WorkbenchError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")
        if (
            isinstance(self.rollouts_max_mb, bool)
            or not isinstance(self.rollouts_max_mb, (int, float))
            or self.rollouts_max_mb < 0
        ):
            raise WorkbenchError(f"rollouts_max_mb must be a number >= 0, got {self.rollouts_max_mb!r}")
        from workbench.adapters import check_peft_spec
        from workbench.data import parse_positions
        from workbench.training.tracking import tracker_names

        self.peft = check_peft_spec(self.peft)
        parse_positions(self.eval_positions)
        tracker_names(self.report_to)  # an unknown tracker is an error before the model loads
        return self

    # -- (de)serialisation -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def fingerprint(self) -> str:
        """A hash of the fields that change the numbers (not where the run is written)."""
        d = {k: v for k, v in self.to_dict().items() if k not in NOT_IN_FINGERPRINT}
        added_later = [("peft", None), ("control", "")]  # fields added after runs were cached: unset, a run keeps
        if self.trainer != "warmstart":  # the fingerprint it had before the field existed (the warm start had
            added_later.append(("train_embeddings", True))  # train_embeddings from the start)
        for name, unset in added_later:
            if name in d and d[name] == unset:
                d.pop(name)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def field_help(cls) -> list[tuple[str, Any, str]]:
        return [
            (
                f.name,
                f.default if f.default is not dataclasses.MISSING else f.default_factory(),
                f.metadata.get("help", ""),
            )
            for f in fields(cls)
        ]


# fields that change where and how a run is shown, not its numbers (a resumed run may change them; caches ignore them)
# (eval_at_start adds or drops one evaluation row; no trained weight depends on it: tests/test_compute.py)
NOT_IN_FINGERPRINT = (
    "output_dir",
    "progress",
    "run_name",
    "report_to",
    "rollouts_max_mb",
    "rollout_table_rows",
    "eval_at_start",
    "hacking_patience",
    "style_margin_check",
)


def check_int(cfg: TrainConfig, name: str, minimum: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise WorkbenchError(f"{name} must be an integer >= {minimum}, got {value!r}")
