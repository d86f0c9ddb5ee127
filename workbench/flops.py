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


@dataclass(frozen=True)
class FlopCounter:
    body_params: int  # parameters every token passes through (all but the input embedding and the LM head)
    head_params: int  # V x H of the LM head

    def forward(self, tokens: int, logit_positions: int) -> float:
        return 2.0 * self.body_params * tokens + 2.0 * self.head_params * logit_positions

    def train(self, tokens: int, logit_positions: int) -> float:
        return 3.0 * self.forward(tokens, logit_positions)


def flop_counter(model: torch.nn.Module) -> FlopCounter:
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())  # a tied head is one parameter, counted once
    body = total - embedding.numel() - (0 if head is embedding else head.numel())
    return FlopCounter(body_params=int(body), head_params=int(head.numel()))
