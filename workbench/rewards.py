"""RLP's information-gain reward, computed for every sampled thought of a document.

    r(c) = log p_policy(x_t | x_<t, <think> c </think>)  -  log p_teacher(x_t | x_<t)

natural log, detached (a constant for the gradient). Positive exactly when the thought makes the true
next token more likely than the no-think teacher does. The teacher is RLP's EMA copy of the policy;
at step 0 it equals the policy.

`reward_map` is the engine: one teacher pass over the document for every no-think score, then one
batched decode that samples all thoughts at all positions and scores x_t with each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from workbench.data import PositionSpec, parse_positions, select_positions
from workbench.models import ModelHandle
from workbench.runs import write_json
from workbench.scoring import NoThinkScores, no_think_scores
from workbench.thoughts import SamplingConfig, Thought, ThoughtSampler, ThoughtTemplate


def info_gain(logp_with_thought: float | np.ndarray, logp_no_think: float | np.ndarray) -> float | np.ndarray:
    """RLP's reward: how many nats the thought added to the log-likelihood of the true next token."""
    return logp_with_thought - logp_no_think


@dataclass
class RewardMap:
    """Every thought sampled on one document, with both scores and its reward."""

    model: str  # the policy's label: it sampled the thoughts and scored with them
    teacher: str  # the teacher's label: it gave the no-think scores
    dtype: str
    template: ThoughtTemplate
    config: SamplingConfig
    positions_spec: str
    document_ids: list[int]
    tokens: list[str]  # the text of each document id
    no_think: NoThinkScores
    positions: list[int]
    thoughts: list[Thought]
    timing: dict[str, float] = field(default_factory=dict)
    # the policy's log p(x_t | x_<t, <think></think>) per position: the empty thought, a reference line
    empty_logp: dict[int, float] = field(default_factory=dict)
    # how the dtype was chosen and on which CPU/device (workbench.hardware.DtypeChoice.as_dict())
    hardware: dict[str, str] = field(default_factory=dict)

    @property
    def rewards(self) -> np.ndarray:
        return np.array([info_gain(th.logp_with_thought, self.no_think.logp[th.position]) for th in self.thoughts])

    @property
    def generated_tokens(self) -> int:
        return sum(th.length for th in self.thoughts)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per thought."""
        rows = []
        for th, reward in zip(self.thoughts, self.rewards):
            t = th.position
            rows.append(
                {
                    "position": t,
                    "target_id": self.document_ids[t],
                    "target": self.tokens[t],
                    "thought_index": th.index,
                    "thought": th.text,
                    "thought_tokens": th.length,
                    "closed_by": th.closed_by,
                    "logp_no_think": float(self.no_think.logp[t]),
                    "entropy_no_think": float(self.no_think.entropy[t]),
                    "logp_with_thought": th.logp_with_thought,
                    "reward": float(reward),
                    "empty_thought_reward": self.empty_rewards.get(t, float("nan")),
                }
            )
        return pd.DataFrame(rows)

    def per_position(self, rewards: np.ndarray | None = None) -> pd.DataFrame:
        """One row per scored position: mean/best/worst reward over its thoughts.

        `rewards` (one per thought) replaces the information gain, e.g. with another design's rewards.
        """
        df = self.to_dataframe()
        if rewards is not None:
            df["reward"] = np.asarray(rewards, dtype=float)
        grouped = df.groupby("position")
        out = grouped.agg(
            target=("target", "first"),
            mean_reward=("reward", "mean"),
            max_reward=("reward", "max"),
            min_reward=("reward", "min"),
            logp_no_think=("logp_no_think", "first"),
            entropy_no_think=("entropy_no_think", "first"),
            mean_thought_tokens=("thought_tokens", "mean"),
            empty_thought_reward=("empty_thought_reward", "first"),
        )
        out["best_thought"] = grouped.apply(lambda g: g.loc[g["reward"].idxmax(), "thought"], include_groups=False)
        out["worst_thought"] = grouped.apply(lambda g: g.loc[g["reward"].idxmin(), "thought"], include_groups=False)
        return out.reset_index()

    def to_json(self) -> dict:
        by_position: dict[int, list[dict]] = {t: [] for t in self.positions}
        for th, reward in zip(self.thoughts, self.rewards):
            by_position[th.position].append(
                {
                    "text": th.text,
                    "scored_ids": th.scored_ids,
                    "logp_with_thought": th.logp_with_thought,
                    "reward": float(reward),
                    "thought_ids": th.ids,
                    "closed_by": th.closed_by,
                }
            )
        return {
            "model": self.model,
            "teacher": self.teacher,
            "dtype": self.dtype,
            "hardware": dict(self.hardware),
            "seed": self.config.seed,
            "template": {"open": self.template.open, "close": self.template.close},
            "settings": {
                "G": self.config.G,
                "thought_tokens": self.config.thought_tokens,
                "temperature": self.config.temperature,
                "top_p": self.config.top_p,
                "allow_eos": self.config.allow_eos,
                "min_thought_tokens": self.config.min_thought_tokens,
                "positions": self.positions_spec,
            },
            "document_ids": list(self.document_ids),
            "positions": [
                {
                    "position": t,
                    "target_id": self.document_ids[t],
                    "logp_no_think": float(self.no_think.logp[t]),
                    "entropy_no_think": float(self.no_think.entropy[t]),
                    "empty_thought_reward": self.empty_rewards.get(t),
                    "thoughts": by_position[t],
                }
                for t in self.positions
            ],
            "timing": dict(self.timing),
            "generated_tokens": self.generated_tokens,
            "summary": self.summary(),
        }

    @property
    def empty_rewards(self) -> dict[int, float]:
        """The reward an empty thought would get at each position (what "not thinking" scores)."""
        return {t: float(info_gain(lp, self.no_think.logp[t])) for t, lp in self.empty_logp.items()}

    def summary(self) -> dict[str, float]:
        r = self.rewards
        lengths = np.array([th.length for th in self.thoughts])
        closed = np.array([th.closed_by != "budget" for th in self.thoughts])
        empty = list(self.empty_rewards.values())
        return {
            **thought_length_stats(self.thoughts),
            "empty_thought_reward": float(np.mean(empty)) if empty else float("nan"),
            "positions": len(self.positions),
            "thoughts": len(self.thoughts),
            "mean_reward": float(r.mean()) if r.size else float("nan"),
            "share_positive": float((r > 0).mean()) if r.size else float("nan"),
            "mean_thought_tokens": float(lengths.mean()) if lengths.size else float("nan"),
            "share_closed": float(closed.mean()) if closed.size else float("nan"),
            "share_empty": float((lengths == 0).mean()) if lengths.size else float("nan"),
        }

    def save_json(self, path: str | Path) -> Path:
        """Write the JSON atomically (a crash never leaves half a file)."""
        return write_json(path, self.to_json())


def thought_length_stats(thoughts: list[Thought]) -> dict[str, float]:
    """The collapse diagnostics: thought length distribution and how thoughts ended."""
    if not thoughts:
        return {}
    lengths = np.array([th.length for th in thoughts])
    ended = np.array([th.closed_by for th in thoughts])
    return {
        "thought_tokens_p10": float(np.percentile(lengths, 10)),
        "thought_tokens_p50": float(np.percentile(lengths, 50)),
        "thought_tokens_p90": float(np.percentile(lengths, 90)),
        "share_closed_by_marker": float((ended == "marker").mean()),
        "share_closed_by_eos": float((ended == "eos").mean()),
        "share_budget": float((ended == "budget").mean()),
    }


def empty_thought_logp(
    policy: ModelHandle,
    document_ids: list[int],
    positions: list[int],
    template: ThoughtTemplate = ThoughtTemplate(),
    prefix=None,
) -> np.ndarray:
    """log p_policy(x_t | x_<t, open close) at each position: the score of not thinking at all.

    A thought budget of 0 makes the sampler feed just the two markers, on the same shared prefix."""
    sampler = ThoughtSampler(policy, template, SamplingConfig(G=1, thought_tokens=0))
    return np.array([th.logp_with_thought for th in sampler.sample(document_ids, positions, prefix=prefix)])


def reward_map(
    policy: ModelHandle,
    teacher: ModelHandle,
    document_ids: list[int],
    positions: str | PositionSpec = "every:8",
    config: SamplingConfig = SamplingConfig(),
    template: ThoughtTemplate = ThoughtTemplate(),
    progress: Callable[[int, int], None] | bool | None = None,
    max_rows: int = 256,
    empty_reference: bool = True,
    backend: str = "transformers",
) -> RewardMap:
    """Sample G thoughts at the chosen positions of a document and compute every reward.

    `progress`: a callback (done, total), or True for a tqdm bar (a widget in notebooks).
    `empty_reference`: also score the empty thought at each position (cheap: two markers per row).
    `backend`: the thought sampler's backend, "transformers" or "vllm" (the no-think teacher pass is
    always transformers: one forward over the document).
    """
    spec = parse_positions(positions) if isinstance(positions, str) else positions
    config = config.validate()
    sampler = ThoughtSampler(policy, template, config, max_rows=max_rows, backend=backend)
    shared = teacher.shares_weights_with(policy)

    start = time.perf_counter()
    no_think, cache = no_think_scores(teacher, document_ids)
    score_s = time.perf_counter() - start

    chosen = select_positions(spec, len(document_ids), seed=config.seed, entropy=no_think.entropy)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        # units: each thought's token budget plus its score, so the bar and its estimate move every decode step
        bar = tqdm(total=len(chosen) * config.G * (config.thought_tokens + 1), desc=f"{len(chosen) * config.G} thoughts",
                   unit="tok", leave=False)

        def progress(done: int, total: int) -> None:
            bar.n = done
            bar.refresh()

    start = time.perf_counter()
    prefix = cache if shared else None
    thoughts = sampler.sample(document_ids, chosen, prefix=prefix, progress=progress or None)
    sample_s = time.perf_counter() - start
    if bar is not None:
        bar.close()
    empty: dict[int, float] = {}
    if empty_reference and chosen:
        empty = dict(zip(chosen, empty_thought_logp(policy, document_ids, chosen, template, prefix).tolist()))

    tok = policy.tokenizer
    return RewardMap(
        model=policy.label,
        teacher=teacher.label,
        dtype=str(policy.dtype).replace("torch.", ""),
        template=template,
        config=config,
        positions_spec=str(spec),
        document_ids=list(document_ids),
        tokens=[tok.decode([i]) for i in document_ids],
        no_think=no_think,
        positions=chosen,
        thoughts=thoughts,
        timing={"score_s": score_s, "sample_s": sample_s},
        empty_logp=empty,
        hardware=policy.dtype_choice.as_dict() if policy.dtype_choice else {},
    )
