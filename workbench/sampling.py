"""Exact temperature / top-p sampling from large-vocabulary logits, fast on CPU.

Why not `torch.multinomial`: on Gemma's 262k vocabulary, softmax + multinomial for 64 rows takes
~400 ms on this CPU, three times the model's forward pass. We sample exactly from the same
distribution in two stages instead:

1. one fused pass computes exp((x - max)/T) summed over blocks of 512 logits (no probability
   tensor is materialised);
2. a block is drawn in proportion to its sum, then a token inside the block in proportion to its
   weight.

P(token) = P(block) * P(token | block) = softmax(x / T)[token], so this is plain sampling, not an
approximation. With top_p < 1 the nucleus is taken from the top-1024 logits (exact whenever they
hold p of the mass, which is checked; other rows fall back to a full sort).
"""

from __future__ import annotations

import os
import shutil

import torch

BLOCK = 512
TOP_K_FOR_NUCLEUS = 1024


def _block_sums(logits: torch.Tensor, inv_temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = logits.float() * inv_temperature
    m = x.amax(-1, keepdim=True)
    e = torch.exp(x - m)
    return e.view(e.shape[0], -1, BLOCK).sum(-1), m


_compiled_block_sums = None


def _use_compile() -> bool:
    setting = os.environ.get("WORKBENCH_COMPILE", "auto").lower()
    if setting in ("0", "false", "no", "off"):
        return False
    # torch.compile on CPU writes a C++ kernel, so it needs a compiler; fall back to eager without one.
    return shutil.which(os.environ.get("CXX", "g++")) is not None or shutil.which("cc") is not None


def block_sums(logits: torch.Tensor, inv_temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block sums of exp((x - max) * inv_temperature) and the row max, in one fused pass when compiled."""
    global _compiled_block_sums
    if _use_compile():
        if _compiled_block_sums is None:
            _compiled_block_sums = torch.compile(_block_sums, dynamic=True)
        try:
            return _compiled_block_sums(logits, inv_temperature)
        except Exception:  # a broken toolchain must not stop sampling; eager gives the same numbers
            os.environ["WORKBENCH_COMPILE"] = "0"
    return _block_sums(logits, inv_temperature)


def _pad_to_block(logits: torch.Tensor) -> torch.Tensor:
    rest = logits.shape[-1] % BLOCK
    if rest == 0:
        return logits
    return torch.nn.functional.pad(logits, (0, BLOCK - rest), value=float("-inf"))


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row with probability proportional to the non-negative `weights` (inverse CDF)."""
    cdf = weights.cumsum(-1)
    u = torch.rand(weights.shape[0], 1, generator=generator, device=weights.device, dtype=cdf.dtype)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return idx.squeeze(-1).clamp_(max=weights.shape[-1] - 1)


def sample_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample one token id per row of `logits` [B, V] from softmax(logits / temperature), nucleus `top_p`.

    temperature == 0 means greedy.
    """
    if temperature == 0:
        return logits.argmax(-1)
    vocab = logits.shape[-1]
    padded = _pad_to_block(logits)
    inv_t = 1.0 / temperature
    if top_p >= 1.0:
        sums, m = block_sums(padded, inv_t)
        block = _draw(sums, generator)
        rows = torch.arange(padded.shape[0], device=padded.device)
        inside = padded.view(padded.shape[0], -1, BLOCK)[rows, block].float()
        weights = torch.exp(inside * inv_t - m)
        token = block * BLOCK + _draw(weights, generator)
        return token.clamp_(max=vocab - 1)
    return _sample_nucleus(padded, inv_t, top_p, generator)


def _sample_nucleus(
    padded: torch.Tensor, inv_t: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    sums, m = block_sums(padded, inv_t)
    total = sums.sum(-1, keepdim=True)
    k = min(TOP_K_FOR_NUCLEUS, padded.shape[-1])
    top_logits, top_ids = torch.topk(padded, k, dim=-1)
    probs = torch.exp(top_logits.float() * inv_t - m) / total
    cum = probs.cumsum(-1)
    # keep every token whose preceding mass is < top_p (the token crossing p is kept, as in HF's top-p)
    keep = (cum - probs) < top_p
    covered = cum[:, -1] >= top_p
    if not bool(covered.all()):
        # the nucleus reaches past the top-k for some rows: sort those rows in full
        for row in torch.nonzero(~covered).flatten().tolist():
            row_probs = torch.exp(padded[row].float() * inv_t - m[row]) / total[row]
            sorted_p, sorted_ids = torch.sort(row_probs, descending=True)
            row_keep = (sorted_p.cumsum(-1) - sorted_p) < top_p
            choice = _draw((sorted_p * row_keep).unsqueeze(0), generator)
            top_ids[row, 0] = sorted_ids[choice]
            keep[row] = False
            keep[row, 0] = True
            probs[row, 0] = 1.0
    idx = _draw(probs * keep, generator)
    return top_ids.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
