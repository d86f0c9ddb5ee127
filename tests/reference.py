"""Straightforward reference computations, written independently of the engine.

Each call runs the plain transformers forward on one full sequence and reads one log-probability:
no caches, no batching, no masks - what a reader would write to check a number by hand.
"""

from __future__ import annotations

import torch


def logp_next(model, ids: list[int], target: int) -> float:
    """log p(target | ids) from one plain forward pass, in fp32 (the LM head at the last position only)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=model.device), logits_to_keep=1).logits[0, -1].float()
    return float(torch.log_softmax(logits, -1)[target])


def entropy_next(model, ids: list[int]) -> float:
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=model.device), logits_to_keep=1).logits[0, -1].float()
    p = torch.softmax(logits, -1)
    return float(-(p * torch.log(p.clamp_min(1e-45))).sum())
