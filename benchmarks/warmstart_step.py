"""A warm-start step's forward and backward: the trainer's arithmetic against the one it replaced, in one process.

    .venv/bin/python benchmarks/warmstart_step.py [--steps 4] [--json OUT]

Both variants compute the same loss on the same documents and weights (configs/warmstart_full.yaml, the full fine-tune: Gemma 3 270M, 6 documents
a step, micro-batches of 4 rows, loss on every token), and differ only in the arithmetic:
- `now` (`NTPTrainer._logits_at_targets`): micro-batches grouped by document length; the decoder on the padded
  micro-batch, then Gemma's 262k-row LM head on the rows that have a target only;
- `before` (the trainer until 2026-12-03): micro-batches in draw order; the model's own forward with the LM head at
  every position but the last, padding included, then the loss masked.
Steps alternate now / before on the draws of steps 1..N (no optimizer step, so both always see the same weights); the
first round is a warm-up and is not counted. Prints seconds per step, the ratio, the LM head rows and the two losses
(equal up to float order), with the CPU kind and dtype.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from workbench.hardware import cpu_kind
from workbench.training.configs import config_from_dict, load_config
from workbench.training.ntp_trainer import right_padded, trained_targets
from workbench.training.warmstart_trainer import WarmStartTrainer

ROOT = Path(__file__).resolve().parents[1]


def loss_backward(trainer: WarmStartTrainer, docs: list[int], variant: str) -> tuple[float, int]:
    """One step's forward and backward (gradients accumulate, as in the trainer); returns the loss and head rows."""
    trainer.optimizer.zero_grad(set_to_none=True)
    n_tokens = sum(len(trained_targets(trainer.train_ids[d])) for d in docs)
    size = trainer.config.micro_batch_rows
    chunks = (
        trainer.micro_batches(docs)
        if variant == "now"
        else [[trainer.train_ids[d] for d in docs[start : start + size]] for start in range(0, len(docs), size)]
    )  # draw order
    rows_total, total = 0, 0.0
    for chunk in chunks:
        ids, attention = right_padded(chunk, trainer.pad_id)
        if variant == "now":
            logits, targets, rows = trainer._logits_at_targets(chunk, ids, attention)
            nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
        else:
            keep = torch.arange(ids.shape[1] - 1)
            logits = trainer.model(input_ids=ids, attention_mask=attention, use_cache=False, logits_to_keep=keep).logits
            rows = ids.shape[0] * (ids.shape[1] - 1)
            nll = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
            ) * attention[:, 1:].reshape(-1)
        loss = nll.sum() / n_tokens
        trainer.accelerator.backward(loss)
        total += float(loss.detach())
        rows_total += rows
    return total, rows_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant (after one warm-up round)")
    parser.add_argument("--json", default="", help="also write the result here")
    args = parser.parse_args()
    out_dir = Path(tempfile.mkdtemp(prefix="warmstart-step-"))
    cfg = load_config(ROOT / "configs" / "warmstart_full.yaml")
    trainer = WarmStartTrainer(
        config_from_dict({**cfg.to_dict(), "output_dir": str(out_dir / "run"), "eval_data": "", "progress": False})
    )
    assert trainer.model is trainer.policy, "one process, no wrapper: the trainer takes the `now` path"
    seconds: dict[str, list[float]] = {"now": [], "before": []}
    rows: dict[str, list[int]] = {"now": [], "before": []}
    losses: list[tuple[float, float]] = []
    try:
        for step in range(args.steps + 1):  # step 0: warm-up (the draw of step 1)
            docs = trainer.step_documents(max(step, 1))
            pair = {}
            for variant in ("now", "before"):
                t0 = time.perf_counter()
                loss, head_rows = loss_backward(trainer, docs, variant)
                if step:
                    seconds[variant].append(time.perf_counter() - t0)
                    rows[variant].append(head_rows)
                pair[variant] = loss
            if step:
                losses.append((pair["now"], pair["before"]))
    finally:
        trainer.close()
        shutil.rmtree(out_dir, ignore_errors=True)
    now, before = statistics.mean(seconds["now"]), statistics.mean(seconds["before"])
    result = {
        "command": f"benchmarks/warmstart_step.py --steps {args.steps}",
        "cpu": cpu_kind(),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "mixed_precision": trainer.mixed_precision,
        "model": cfg.model,
        "docs_per_step": cfg.docs_per_step,
        "micro_batch_rows": cfg.micro_batch_rows,
        "seconds_now": seconds["now"],
        "seconds_before": seconds["before"],
        "head_rows_now": rows["now"],
        "head_rows_before": rows["before"],
        "losses_now_before": losses,
        "speedup": before / now,
    }
    print(f"CPU: {result['cpu']}, mixed precision {trainer.mixed_precision}")
    print(f"now    {now:6.2f} s a step  (LM head rows {statistics.mean(rows['now']):.0f})")
    print(f"before {before:6.2f} s a step  (LM head rows {statistics.mean(rows['before']):.0f})")
    print(
        f"before / now: {before / now:.2f}x; losses now vs before: " + ", ".join(f"{a:.5f}/{b:.5f}" for a, b in losses)
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
