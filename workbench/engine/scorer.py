"""No-think scores: the teacher's log p(x_t | x_<t) and entropy at every position, from one forward pass.

The LM head runs over chunks of positions so a 262k vocabulary never needs a [T, V] fp32 tensor
for the whole document at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workbench.engine.prefix_cache import encode_prefix
from workbench.engine.token_sampling import LMHead
from workbench.errors import WorkbenchError
from workbench.models import ModelHandle


@dataclass
class NoThinkScores:
    """Per-position teacher scores; index t describes the prediction of x_t from ids[:t] (t = 0 is NaN)."""

    model: str  # the teacher's label
    logp: np.ndarray  # log p_teacher(x_t | x_<t), natural log
    entropy: np.ndarray  # entropy of p_teacher(. | x_<t), nats
    top_id: np.ndarray  # argmax of p_teacher(. | x_<t) (-1 at t = 0)
    # the k most likely next tokens at each position and their log p ([n, k]; -1 / NaN at t = 0), when asked for
    top_ids: np.ndarray | None = None
    top_logp: np.ndarray | None = None

    def runner_up(self, t: int, target: int) -> int:
        """The teacher's most likely token at t other than `target` (needs top_k >= 2)."""
        if self.top_ids is None or self.top_ids.shape[1] < 2:
            raise WorkbenchError("no_think_scores(..., top_k=2) or more is needed for the runner-up token")
        return int(next(i for i in self.top_ids[t] if i != target))

    @property
    def surprisal(self) -> np.ndarray:
        return -self.logp


def no_think_scores(
    teacher: ModelHandle, ids: list[int], chunk: int = 128, entropy: bool = True, top_k: int = 0
) -> tuple[NoThinkScores, object]:
    """Score every position of `ids` with the teacher in one forward pass.

    Returns the scores and the key/value cache of the pass, which the thought sampler reuses when
    the teacher shares the policy's weights. `entropy=False` leaves the entropies NaN and skips the one pass over
    each chunk of the head that they need (held-out loss and accuracy need only log p and the argmax).
    `top_k` > 0 also keeps the k most likely next tokens at every position (the thought lab's "without a thought").
    """
    n = len(ids)
    hidden, cache = encode_prefix(teacher.model, ids, n)
    logp = np.full(n, np.nan)
    entropies = np.full(n, np.nan)
    top = np.full(n, -1, dtype=np.int64)
    top_ids = np.full((n, top_k), -1, dtype=np.int64) if top_k else None
    top_logp = np.full((n, top_k), np.nan) if top_k else None
    targets = torch.tensor(ids[1:], device=hidden.device)
    head = LMHead.of(teacher.model)
    with torch.inference_mode():
        for start in range(0, n - 1, chunk):
            stop = min(start + chunk, n - 1)
            # hidden state at s predicts ids[s + 1]
            stats = head.stats(hidden[start:stop], targets[start:stop], entropy=entropy, top_k=top_k)
            top[start + 1 : stop + 1] = stats.argmax.cpu().numpy()
            logp[start + 1 : stop + 1] = (stats.target_z - stats.lse).cpu().numpy()
            if entropy:
                entropies[start + 1 : stop + 1] = stats.entropy.cpu().numpy()
            if top_k:
                top_ids[start + 1 : stop + 1] = stats.top_ids.cpu().numpy()
                top_logp[start + 1 : stop + 1] = (stats.top_z - stats.lse[:, None]).cpu().numpy()
    return NoThinkScores(teacher.label, logp, entropies, top, top_ids, top_logp), cache


def no_think_logp_at(teacher: ModelHandle, ids: list[int], positions: Sequence[int]) -> np.ndarray:
    """log p_teacher(x_t | x_<t) at the given positions only (t >= 1), from one forward pass over ids[:max(t)]:
    the LM head runs at those positions alone (a training step reads a few of a document's 256 positions)."""
    if not positions:
        return np.zeros(0)
    if min(positions) < 1 or max(positions) >= len(ids):
        raise WorkbenchError(f"positions must lie in 1..{len(ids) - 1}, got {min(positions)}..{max(positions)}")
    span = max(positions)
    hidden, _ = encode_prefix(teacher.model, ids[:span], span)
    with torch.inference_mode():
        # the hidden state at s predicts ids[s + 1]
        rows = torch.tensor([t - 1 for t in positions], device=hidden.device)
        targets = torch.tensor([ids[t] for t in positions], device=hidden.device)
        target_z, lse, _ = head_stats(teacher.model, hidden[rows], targets)
    return (target_z - lse).double().cpu().numpy()


@dataclass
class ContinuationScores:
    """Per thought: the policy's log-probs of the true continuation after the thought, and optionally
    its self-certainty while writing the thought."""

    logp: list[np.ndarray]  # [k] = log p(x_{t+k} | scored_ids, x_t .. x_{t+k-1}), k < n (fewer at the document end)
    self_certainty: list[np.ndarray] | None  # [j] = KL(uniform || p(. | ..., c_<j)) at thought token j
    forward_tokens: int
    seconds: float
    head_rows: int = 0  # LM-head rows computed (the costly part on a 262k vocabulary)


def score_continuations(
    policy: ModelHandle,
    document_ids: list[int],
    thoughts: list,
    template,
    n_next: int = 1,
    prefix=None,
    self_certainty: bool = False,
    max_rows: int = 64,
    count=None,
) -> ContinuationScores:
    """Teacher-force `open + thought + close + x_t .. x_{t+n-2}` for every thought in one batched pass per
    chunk of rows, on top of the document's shared prefix cache, and read the log-probs of x_t .. x_{t+n-1}.

    Rows are right-padded: padding comes after every real token, so no real token attends to it. `count` (a
    `engine.thought.ForwardCount`) gets the tokens fed (padding included: it is computed) and the LM-head rows.
    """
    import time

    from workbench.engine.prefix_cache import (
        SharedPrefixCache,
        SharedPrefixMode,
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
    prefix = ensure_prefix(model, document_ids, span, prefix, count)
    logps: list[np.ndarray] = []
    head_rows = 0
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
        with SharedPrefixMode(model, cache), torch.inference_mode():
            hidden = shared_prefix_forward(model, cache, inp, slot_pos, t_rows.clone(), span)
            # the LM head once over every position read in the chunk (per row it re-read the 262k x d head each time)
            rows_i = [r for r, idx in enumerate(reads) for _ in idx]
            cols_i = [k for idx in reads for k in idx]
            want = torch.tensor([x for tgt in targets for x in tgt], device=device)
            z_lse_mean = head_stats(model, hidden[rows_i, cols_i], want)
            head_rows += len(rows_i)
            if count is not None:
                count.add(inp.numel(), len(rows_i))
            logps.extend(split_by_lengths((z_lse_mean[0] - z_lse_mean[1]).cpu().numpy(), [len(idx) for idx in reads]))
            if certainty is not None:
                rows_j = [r for r, j in enumerate(thought_reads) for _ in j]
                cols_j = [k for j in thought_reads for k in j]
                kl = np.zeros(0)
                if rows_j:
                    _, lse, mean_z = head_stats(model, hidden[rows_j, cols_j], None)
                    head_rows += len(rows_j)
                    if count is not None:
                        count.add(0, len(rows_j))
                    # KL(U || p) = sum_v (1/V) log((1/V) / p_v) = -log V - mean_v log p_v = -log V - (mean_v z - lse)
                    kl = (-vocab_log - (mean_z - lse)).cpu().numpy()
                certainty.extend(split_by_lengths(kl, [len(j) for j in thought_reads]))
    return ContinuationScores(logps, certainty, forward_tokens, time.perf_counter() - start, head_rows)


def split_by_lengths(flat: Sequence, lengths: Sequence[int]) -> list:
    """Cut a flat sequence into consecutive pieces of the given lengths (the inverse of concatenating them)."""
    pieces, at = [], 0
    for n in lengths:
        pieces.append(flat[at : at + n])
        at += n
    return pieces


def head_stats(model: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor | None, rows: int = 256):
    """For hidden states [N, d]: (logit of each target, logsumexp, mean logit) of the LM head's output, computed
    over row chunks so no [N, V] tensor is held at once. Natural log; the target logits are None without targets."""
    head = LMHead.of(model)
    target_z, lse, mean_z = [], [], []
    for start in range(0, hidden.shape[0], rows):
        stats = head.stats(hidden[start : start + rows], None if targets is None else targets[start : start + rows])
        lse.append(stats.lse)
        mean_z.append(stats.mean_z)
        if targets is not None:
            target_z.append(stats.target_z)
    empty = hidden.new_zeros(0, dtype=torch.float32)
    cat = lambda xs: torch.cat(xs) if xs else empty  # noqa: E731
    return (cat(target_z) if targets is not None else None), cat(lse), cat(mean_z)
