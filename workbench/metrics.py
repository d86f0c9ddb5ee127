"""One vocabulary for what the workbench measures: the names reward maps, training logs (`metrics.jsonl`), the held-out
evaluation (the same names with `eval_` in front) and the notebooks use, and the two functions that compute the
statistics of a set of thoughts and of their rewards - the only place they are computed.

Grammar: `<quantity>_mean` / `_p10` / `_min` / `_max` for a statistic of a quantity, `share_<event>` for the share of
thoughts where something happened, `eval_<name>` for the same on held-out documents.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

VOCABULARY: dict[str, str] = {
    "reward_mean": "mean information-gain reward of the sampled thoughts (nats): log p(x_t | thought) - log p(x_t | no thought)",
    "share_positive": "share of thoughts whose reward is above zero (they raised the true next token's probability)",
    "content_gain_mean": "mean reward minus the empty thought's reward at the same position: what the words added",
    "share_content_gain_positive": "share of thoughts that beat the empty thought at their position",
    "empty_thought_reward": "mean reward of the empty thought <think></think> (what the markers alone do)",
    "thought_tokens_mean": "mean thought length in tokens (p10 / p50 / p90: its percentiles)",
    "share_empty": "share of thoughts with no token",
    "share_closed": "share of thoughts that ended on their own (closing marker or EOS), not at the token budget",
    "share_closed_by_marker": "share of thoughts ended by the closing marker",
    "share_closed_by_eos": "share of thoughts ended by EOS",
    "share_budget": "share of thoughts cut at the token budget",
    "loss": "next-token loss (nats/token) of the training batch; eval_loss: on the held-out documents, no thought",
    "work_flops": "counted work (workbench/work.py): FLOPs of every forward a process asked for, plus its training runs' "
    "own counts; work_tokens / work_head_rows: tokens fed and LM-head rows; work_flops_evaluation: a "
    "training run's held-out evaluations",
}

# old spellings -> the vocabulary's; read_metrics and RewardMap.summary() still answer to them, with a warning
OLD_NAMES: dict[str, str] = {
    "mean_reward": "reward_mean",
    "mean_content_gain": "content_gain_mean",
    "mean_thought_tokens": "thought_tokens_mean",
    "min_reward": "reward_min",
    "max_reward": "reward_max",
    "eval_content_gain": "eval_content_gain_mean",
    "eval_thought_tokens": "eval_thought_tokens_mean",
}


class Metrics(dict):
    """A dict of metrics that still answers to an old spelling (`summary["mean_reward"]`), with a DeprecationWarning
    naming the new one."""

    def __missing__(self, key: str) -> Any:
        new = OLD_NAMES.get(key)
        if new is None or new not in self:
            raise KeyError(key)
        warnings.warn(f"metric {key!r} is now called {new!r}", DeprecationWarning, stacklevel=2)
        return self[new]


def renamed(row: Mapping[str, Any]) -> dict[str, Any]:
    """A metrics row written under the old spellings (an older run's metrics.jsonl), in today's vocabulary."""
    return {OLD_NAMES.get(k, k) if OLD_NAMES.get(k, k) not in row else k: v for k, v in row.items()}


def thought_stats(lengths: Sequence[int] | np.ndarray, closed_by: Iterable[str]) -> dict[str, float]:
    """Length and ending of a set of thoughts (`Thought.length`, `Thought.closed_by`): thought_tokens_mean / p10 / p50
    / p90, share_empty, share_closed, share_closed_by_marker, share_closed_by_eos, share_budget. Empty input: {}."""
    lengths = np.asarray(lengths, dtype=float)
    ended = np.asarray(list(closed_by))
    if not lengths.size:
        return {}
    return {
        "thought_tokens_mean": float(lengths.mean()),
        "thought_tokens_p10": float(np.percentile(lengths, 10)),
        "thought_tokens_p50": float(np.percentile(lengths, 50)),
        "thought_tokens_p90": float(np.percentile(lengths, 90)),
        "share_empty": float((lengths == 0).mean()),
        "share_closed": float((ended != "budget").mean()),
        "share_closed_by_marker": float((ended == "marker").mean()),
        "share_closed_by_eos": float((ended == "eos").mean()),
        "share_budget": float((ended == "budget").mean()),
    }


def thoughts_stats(thoughts: Sequence[Any]) -> dict[str, float]:
    """`thought_stats` of `Thought` objects."""
    return thought_stats([th.length for th in thoughts], [th.closed_by for th in thoughts])


def reward_stats(
    rewards: Sequence[float] | np.ndarray, content_gains: Sequence[float] | np.ndarray | None = None
) -> dict[str, float]:
    """reward_mean and share_positive of some rewards; with their content gains also content_gain_mean and
    share_content_gain_positive (the mean leaves out NaN gains - no empty-thought reference -, the share counts them
    as not positive). Empty input: NaN."""
    r = np.asarray(rewards, dtype=float)
    out = {
        "reward_mean": float(r.mean()) if r.size else float("nan"),
        "share_positive": float((r > 0).mean()) if r.size else float("nan"),
    }
    if content_gains is not None:
        g = np.asarray(content_gains, dtype=float)
        finite = g[~np.isnan(g)]
        out["content_gain_mean"] = float(finite.mean()) if finite.size else float("nan")
        out["share_content_gain_positive"] = float((g > 0).mean()) if g.size else float("nan")
    return out
