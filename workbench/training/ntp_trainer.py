"""Continued pretraining: the plain next-token loss on the same documents, the baseline RLP must beat.

For the paper's compute-matched comparison (its Table 4) the run stops once it has used as much as a given RLP run
(`match_run: runs/rlp-...`), measured as `match` says: `flops`, every forward of every process counted the same way
(`workbench.training.flops.ComputeMeter`), or `tokens`, the paper's appendix budget T_flop = rollout tokens + input tokens of
the RLP run against this run's training tokens. The paper's CPT optimiser settings are `configs/ntp_cpt_paper.yaml`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError
from workbench.training.ntp_config import NTPConfig
from workbench.training.trainer import Trainer


def budget_of_run(run_dir: str | Path, quantity: str) -> float:
    """What a finished run used: its training FLOPs ('flops') or its token-budget count ('tokens'), from
    summary.json, else its last metrics row."""
    run_dir = Path(run_dir)
    key = {"flops": ("total_flops", "flops"), "tokens": ("total_budget_tokens", "budget_tokens")}[quantity]
    summary = run_dir / "summary.json"
    if summary.exists() and key[0] in (data := json.loads(summary.read_text())):
        return float(data[key[0]])
    from workbench.training.trainer import read_metrics

    rows = read_metrics(run_dir)
    if not rows or key[1] not in rows[-1]:
        raise WorkbenchError(
            f"match_run: {run_dir} has no {quantity} count (no summary.json or metrics.jsonl with "
            f"{key[1]}); is it a run directory of this workbench version?"
        )
    return float(rows[-1][key[1]])


def right_padded(chunk: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [rows, longest] padded on the right with pad_id, and the attention mask (1 on real tokens)."""
    ids = torch.full((len(chunk), max(len(x) for x in chunk)), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for i, x in enumerate(chunk):
        ids[i, : len(x)] = torch.tensor(x)
        attention[i, : len(x)] = 1
    return ids, attention


def trained_targets(ids: list[int]) -> list[int]:
    """The positions t whose token ids[t] the loss predicts: every t >= 1, or the document's own `trained` list (the
    warm start trains the thought, its markers and the answers only)."""
    trained = getattr(ids, "trained", None)
    return list(range(1, len(ids))) if trained is None else list(trained)


class NTPTrainer(Trainer):
    config: NTPConfig
    config_class = NTPConfig  # launch.trainer_for picks the trainer by its config's class

    def setup(self) -> None:
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def compute_budget(self) -> tuple[str, float] | None:
        cfg = self.config
        if cfg.match_run:
            return cfg.match, budget_of_run(cfg.match_run, cfg.match)
        return super().compute_budget()

    def expected_steps(self) -> int:
        """With a budget, the steps it will take at the mean document length (so a decaying schedule reaches its
        floor about when the run ends); else max_steps."""
        if self.stop_budget is None:
            return self.config.max_steps
        quantity, amount = self.stop_budget
        tokens = self.config.docs_per_step * float(np.mean([len(x) for x in self.train_ids]))
        per_step = self.flops_of.train(int(tokens), int(tokens)) if quantity == "flops" else tokens
        return max(1, min(self.config.max_steps, math.ceil(amount / per_step)))

    def _logits_at_targets(self, chunk: list[list[int]], ids: torch.Tensor, attention: torch.Tensor):
        """Logits [N, V] at the chunk's trained targets only (never at padding), their target ids, and how many rows
        the LM head computed. Gemma's 262k-row LM head is about half a CPU step, so it runs on those N rows alone: the
        decoder runs on every token (the targets read the whole context), then the head on the gathered rows - a
        contiguous [N, V] matrix, whose log-softmax and backward take the CPU's vectorised path (over a transposed
        [B, V, T] view they did not: 2.5 s of an 18 s step). A wrapped model (DDP, FSDP) goes through its wrapper's
        forward instead, whose hooks sync or gather the weights: the head runs on every position there."""
        rows = torch.tensor([i for i, x in enumerate(chunk) for _ in trained_targets(x)], device=ids.device)
        cols = torch.tensor([t - 1 for x in chunk for t in trained_targets(x)], device=ids.device)
        policy = self.policy
        if self.model is not policy:
            keep = torch.arange(ids.shape[1] - 1, device=ids.device)
            logits = self.model(input_ids=ids, attention_mask=attention, use_cache=False, logits_to_keep=keep).logits
            return logits[rows, cols], ids[rows, cols + 1], int(ids.shape[0] * (ids.shape[1] - 1))
        with self.accelerator.autocast():  # the decoder is a submodule: the prepared model's autocast does not reach it
            hidden = policy.get_decoder()(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
        head = policy.get_output_embeddings()
        with self.accelerator.autocast():
            logits = torch.nn.functional.linear(hidden[rows, cols], head.weight, getattr(head, "bias", None))
        if softcap := getattr(policy.config, "final_logit_softcapping", None):
            logits = torch.tanh(logits / softcap) * softcap
        return logits, ids[rows, cols + 1], int(rows.numel())

    def step_documents(self, step: int) -> list[int]:
        """The training documents of `step` on this process (seeded by the run's seed, the step and the process)."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, step, self.accelerator.process_index])
        return sorted(
            int(i)
            for i in rng.choice(len(self.train_ids), size=min(cfg.docs_per_step, len(self.train_ids)), replace=False)
        )

    def micro_batches(self, docs: list[int]) -> list[list[list[int]]]:
        """The step's documents in micro-batches of similar lengths (less padding); the loss is a sum over the step's
        tokens, so the grouping changes the arithmetic's order, not the math."""
        by_length = sorted(docs, key=lambda d: (len(self.train_ids[d]), d))
        size = self.config.micro_batch_rows
        return [
            [self.train_ids[d] for d in by_length[start : start + size]] for start in range(0, len(by_length), size)
        ]

    def train_step(self, step: int) -> dict[str, Any]:
        cfg = self.config
        docs = self.step_documents(step)
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        n_tokens = sum(len(trained_targets(self.train_ids[d])) for d in docs)  # predicted tokens in the batch
        total_loss = 0.0
        for chunk in self.micro_batches(docs):
            ids, attention = (x.to(self.accelerator.device) for x in right_padded(chunk, self.pad_id))
            logits, targets, head_rows = self._logits_at_targets(chunk, ids, attention)
            self.compute.train("loss", ids.numel(), head_rows)
            nll = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), targets, reduction="none"
            )
            loss = nll.sum() / n_tokens  # token mean over the whole batch
            self.accelerator.backward(loss)
            total_loss += float(loss.detach())
        grad_norm = (
            float(self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm))
            if cfg.max_grad_norm > 0
            else float("nan")
        )
        self.optimizer_step()
        tokens = sum(len(self.train_ids[d]) for d in docs)
        seconds = time.perf_counter() - t0
        return {
            "loss": total_loss,
            "grad_norm": grad_norm,
            "train_tokens": tokens,
            "train_tokens_per_s": tokens / seconds,
            "budget_tokens_step": tokens,
            **self.compute.step_metrics(),
        }
