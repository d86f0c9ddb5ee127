"""Continued pretraining: the plain next-token loss on the same documents, the baseline RLP must beat.

For the paper's compute-matched comparison (Table 4) the run stops once it has used as many
estimated FLOPs as a given RLP run (`match_flops_of: runs/rlp-...`), counted the same way
(`workbench.flops`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError
from workbench.ntp_config import NTPConfig
from workbench.trainer import Trainer


def flops_of_run(run_dir: str | Path) -> float:
    """Total training FLOPs of a finished run (its summary.json, else its last metrics row)."""
    run_dir = Path(run_dir)
    summary = run_dir / "summary.json"
    if summary.exists():
        return float(json.loads(summary.read_text())["total_flops"])
    from workbench.trainer import read_metrics

    rows = read_metrics(run_dir)
    if not rows:
        raise WorkbenchError(f"match_flops_of: {run_dir} has no summary.json or metrics.jsonl")
    return float(rows[-1]["flops"])


class NTPTrainer(Trainer):
    config: NTPConfig

    def setup(self) -> None:
        cfg = self.config
        self.flops_budget = cfg.flops_budget or (flops_of_run(cfg.match_flops_of) if cfg.match_flops_of else None)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def finished(self) -> bool:
        return self.flops_budget is not None and self.flops >= self.flops_budget

    def progress(self) -> tuple[float, float, str]:
        if self.flops_budget is None:
            return super().progress()
        return min(self.flops, self.flops_budget), self.flops_budget, "FLOP"  # known from the start, unlike the steps

    def train_step(self, step: int) -> dict[str, Any]:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, step, self.accelerator.process_index])
        docs = sorted(int(i) for i in rng.choice(len(self.train_ids), size=min(cfg.docs_per_step, len(self.train_ids)), replace=False))
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        n_tokens = sum(len(self.train_ids[d]) - 1 for d in docs)  # predicted tokens in the batch
        total_loss = 0.0
        for start in range(0, len(docs), self.config.micro_batch_rows):
            chunk = [self.train_ids[d] for d in docs[start : start + self.config.micro_batch_rows]]
            length = max(len(x) for x in chunk)
            ids = torch.full((len(chunk), length), self.pad_id, dtype=torch.long)
            attention = torch.zeros_like(ids)
            for i, x in enumerate(chunk):
                ids[i, : len(x)] = torch.tensor(x)
                attention[i, : len(x)] = 1
            ids, attention = ids.to(self.accelerator.device), attention.to(self.accelerator.device)
            # the LM head only where a next token is predicted (not the last position), and the cross entropy over a
            # contiguous [positions, V] matrix: over a transposed [B, V, T] view the CPU log-softmax and its backward
            # took a non-vectorised path (2.5 s of an 18 s step on Gemma's 262k vocabulary)
            keep = torch.arange(length - 1, device=ids.device)
            logits = self.model(input_ids=ids, attention_mask=attention, use_cache=False, logits_to_keep=keep).logits
            targets = ids[:, 1:]
            mask = attention[:, 1:].bool()
            nll = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                    reduction="none")
            loss = (nll * mask.reshape(-1)).sum() / n_tokens  # token mean over the whole batch
            self.accelerator.backward(loss)
            total_loss += float(loss.detach())
        grad_norm = float(self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)) if cfg.max_grad_norm > 0 else float("nan")
        self.optimizer_step()
        tokens = sum(len(self.train_ids[d]) for d in docs)
        self.flops += self.flops_of.train(tokens, tokens)
        seconds = time.perf_counter() - t0
        return {"loss": total_loss, "grad_norm": grad_norm, "train_tokens": tokens, "train_tokens_per_s": tokens / seconds}

