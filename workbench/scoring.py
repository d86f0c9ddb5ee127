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
