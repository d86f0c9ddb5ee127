"""No-think scores: the teacher's log p(x_t | x_<t) and entropy at every position, from one forward pass.

The LM head runs over chunks of positions so a 262k vocabulary never needs a [T, V] fp32 tensor
for the whole document at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workbench.models import ModelHandle
from workbench.thoughts import encode_prefix, lm_logits


@dataclass
class NoThinkScores:
    """Per-position teacher scores; index t describes the prediction of x_t from ids[:t] (t = 0 is NaN)."""

    model: str  # the teacher's label
    logp: np.ndarray  # log p_teacher(x_t | x_<t), natural log
    entropy: np.ndarray  # entropy of p_teacher(. | x_<t), nats
    top_id: np.ndarray  # argmax of p_teacher(. | x_<t) (-1 at t = 0)

    @property
    def surprisal(self) -> np.ndarray:
        return -self.logp


def no_think_scores(teacher: ModelHandle, ids: list[int], chunk: int = 128) -> tuple[NoThinkScores, object]:
    """Score every position of `ids` with the teacher in one forward pass.

    Returns the scores and the key/value cache of the pass, which the thought sampler reuses when
    the teacher shares the policy's weights.
    """
    n = len(ids)
    hidden, cache = encode_prefix(teacher.model, ids, n)
    logp = np.full(n, np.nan)
    entropy = np.full(n, np.nan)
    top = np.full(n, -1, dtype=np.int64)
    targets = torch.tensor(ids[1:], device=hidden.device)
    with torch.inference_mode():
        for start in range(0, n - 1, chunk):
            stop = min(start + chunk, n - 1)
            logprobs = torch.log_softmax(lm_logits(teacher.model, hidden[start:stop]).float(), -1)
            # hidden state at s predicts ids[s + 1]
            logp[start + 1 : stop + 1] = logprobs.gather(-1, targets[start:stop, None])[:, 0].cpu().numpy()
            entropy[start + 1 : stop + 1] = torch.special.entr(logprobs.exp()).sum(-1).cpu().numpy()
            top[start + 1 : stop + 1] = logprobs.argmax(-1).cpu().numpy()
    return NoThinkScores(model=teacher.label, logp=logp, entropy=entropy, top_id=top), cache


@dataclass
class ContinuationScores:
    """Per thought: the policy's log-probs of the true continuation after the thought, and optionally
    its self-certainty while writing the thought."""

    logp: list[np.ndarray]  # [k] = log p(x_{t+k} | scored_ids, x_t .. x_{t+k-1}), k < n (fewer at the document end)
    self_certainty: list[np.ndarray] | None  # [j] = KL(uniform || p(. | ..., c_<j)) at thought token j
    forward_tokens: int
    seconds: float


def score_continuations(
    policy: ModelHandle,
    document_ids: list[int],
    thoughts: list,
    template,
    n_next: int = 1,
    prefix=None,
    self_certainty: bool = False,
    max_rows: int = 64,
) -> ContinuationScores:
    """Teacher-force `open + thought + close + x_t .. x_{t+n-2}` for every thought in one batched pass per
    chunk of rows, on top of the document's shared prefix cache, and read the log-probs of x_t .. x_{t+n-1}.

    Rows are right-padded: padding comes after every real token, so no real token attends to it.
    """
    import time

    from workbench.thoughts import (
        SharedPrefixCache,
        _SharedPrefixMode,
        ensure_prefix,
        row_slot_positions,
        shared_prefix_forward,
    )

    start = time.perf_counter()
    model, tok = policy.model, policy.tokenizer
    device = next(model.parameters()).device
    open_ids, close_ids = template.open_ids(tok), template.close_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    span = max(th.position for th in thoughts)
    prefix = ensure_prefix(model, document_ids, span, prefix)
    logps: list[np.ndarray] = []
    certainty: list[np.ndarray] | None = [] if self_certainty else None
    forward_tokens = 0
    vocab_log = float(np.log(model.get_output_embeddings().weight.shape[0]))
    for first in range(0, len(thoughts), max_rows):
        chunk = thoughts[first : first + max_rows]
        owns, reads, targets, thought_reads = [], [], [], []
        for th in chunk:
            t = th.position
            n = min(n_next, len(document_ids) - t)
            head = open_ids + list(th.ids) + close_ids
            owns.append(head + list(document_ids[t : t + n - 1]))
            reads.append([len(head) - 1 + k for k in range(n)])
            targets.append(list(document_ids[t : t + n]))
            thought_reads.append([len(open_ids) - 1 + j for j in range(len(th.ids))])
        width = max(len(o) for o in owns)
        forward_tokens += sum(len(o) for o in owns)
        inp = torch.tensor([o + [pad] * (width - len(o)) for o in owns], device=device)
        t_rows = torch.tensor([th.position for th in chunk], device=device)
        cache = SharedPrefixCache(prefix, span, len(chunk), width)
        slot_pos = row_slot_positions(t_rows, span + width)
        with _SharedPrefixMode(model, cache), torch.inference_mode():
            hidden = shared_prefix_forward(model, cache, inp, slot_pos, t_rows.clone(), span)
            for r, (idx, tgt) in enumerate(zip(reads, targets)):
                lp = torch.log_softmax(lm_logits(model, hidden[r, idx]).float(), -1)
                logps.append(lp.gather(-1, torch.tensor(tgt, device=device)[:, None])[:, 0].cpu().numpy())
                if certainty is not None:
                    j = thought_reads[r]
                    if not j:
                        certainty.append(np.zeros(0))
                        continue
                    lp_thought = torch.log_softmax(lm_logits(model, hidden[r, j]).float(), -1)
                    # KL(U || p) = sum_v (1/V) log((1/V) / p_v) = -log V - mean_v log p_v
                    certainty.append((-vocab_log - lp_thought.mean(-1)).cpu().numpy())
    return ContinuationScores(logps, certainty, forward_tokens, time.perf_counter() - start)
