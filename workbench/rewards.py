"""RLP's information-gain reward, computed for every sampled thought of a document.

    r(c) = log p_policy(x_t | x_<t, <think> c </think>)  -  log p_teacher(x_t | x_<t)

natural log, detached (a constant for the gradient). Positive exactly when the thought makes the true
next token more likely than the no-think teacher does. The teacher is RLP's EMA copy of the policy;
at step 0 it equals the policy.

`reward_map` is the engine: one teacher pass over the document for every no-think score, then one
batched decode that samples all thoughts at all positions and scores x_t with each. `score_thoughts` scores
thoughts someone wrote (or generated from the document, `workbench.probes`) through the same decode loop, into
the same record type, so every view, export and reward design works on them too.

Two derived readings separate what inserting a thought costs from what its words add:

    content gain(c) = r(c) - r(empty thought)      (the format cost of `<think></think>` removed)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.data import PositionSpec, parse_positions, select_positions
from workbench.engine.backends import make_sampler
from workbench.engine.sampler import ThoughtSampler
from workbench.engine.scorer import NoThinkScores, no_think_scores
from workbench.engine.thought import SamplingConfig, Thought, ThoughtTemplate
from workbench.errors import WorkbenchError
from workbench.metrics import Metrics, reward_stats, thoughts_stats
from workbench.models import ModelHandle
from workbench.run_dirs import write_json


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
    source: str = "sampled"  # "sampled" by the policy, or "given" (written by hand, or probes built from the document)

    @property
    def rewards(self) -> np.ndarray:
        return np.array([info_gain(th.logp_with_thought, self.no_think.logp[th.position]) for th in self.thoughts])

    @property
    def content_gains(self) -> np.ndarray:
        """Per thought: reward - the empty thought's reward at its position (NaN without the empty reference)."""
        empty = self.empty_rewards
        return self.rewards - np.array([empty.get(th.position, np.nan) for th in self.thoughts])

    @property
    def generated_tokens(self) -> int:
        return sum(th.length for th in self.thoughts)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per thought."""
        rows = []
        for th, reward, gain in zip(self.thoughts, self.rewards, self.content_gains):
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
                    "content_gain": float(gain),
                }
            )
        return pd.DataFrame(rows)

    def per_position(self, rewards: np.ndarray | None = None) -> pd.DataFrame:
        """One row per scored position: mean/best/worst reward over its thoughts.

        `rewards` (one per thought) replaces the information gain, e.g. with another design's rewards; the content
        gain is then NaN (it is an information gain minus the empty thought's, not defined for another design's units).
        """
        df = self.to_dataframe()
        if rewards is not None:
            df["reward"] = np.asarray(rewards, dtype=float)
            df["content_gain"] = np.nan
        grouped = df.groupby("position")
        out = grouped.agg(
            target=("target", "first"),
            thoughts=("reward", "size"),
            reward_mean=("reward", "mean"),
            reward_max=("reward", "max"),
            reward_min=("reward", "min"),
            logp_no_think=("logp_no_think", "first"),
            entropy_no_think=("entropy_no_think", "first"),
            thought_tokens_mean=("thought_tokens", "mean"),
            empty_thought_reward=("empty_thought_reward", "first"),
            content_gain_mean=("content_gain", "mean"),
            max_content_gain=("content_gain", "max"),
        )
        out["best_thought"] = grouped.apply(lambda g: g.loc[g["reward"].idxmax(), "thought"], include_groups=False)
        out["worst_thought"] = grouped.apply(lambda g: g.loc[g["reward"].idxmin(), "thought"], include_groups=False)
        return out.reset_index()

    def to_json(self) -> dict:
        by_position: dict[int, list[dict]] = {t: [] for t in self.positions}
        for th, reward, gain in zip(self.thoughts, self.rewards, self.content_gains):
            record = {
                "text": th.text,
                "scored_ids": th.scored_ids,
                "logp_with_thought": th.logp_with_thought,
                "reward": float(reward),
                "content_gain": None if np.isnan(gain) else float(gain),
                "thought_ids": th.ids,
                "closed_by": th.closed_by,
            }
            if th.next_top:
                record["next_top"] = [{"id": i, "logp": lp} for i, lp in th.next_top]
            by_position[th.position].append(record)
        return {
            "model": self.model,
            "teacher": self.teacher,
            "dtype": self.dtype,
            "hardware": dict(self.hardware),
            "source": self.source,
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

    def summary(self) -> Metrics:
        """The map's statistics in the workbench's one vocabulary (`workbench.metrics`)."""
        empty = list(self.empty_rewards.values())
        stats = reward_stats(self.rewards, self.content_gains if empty else None)
        if not empty:  # no empty-thought reference: no content gain
            stats.update(content_gain_mean=float("nan"), share_content_gain_positive=float("nan"))
        return Metrics(
            {
                **stats,
                "empty_thought_reward": float(np.mean(empty)) if empty else float("nan"),
                "positions": len(self.positions),
                "thoughts": len(self.thoughts),
                **(
                    thoughts_stats(self.thoughts)
                    or {k: float("nan") for k in ("thought_tokens_mean", "share_closed", "share_empty")}
                ),
            }
        )

    def save_json(self, path: str | Path) -> Path:
        """Write the JSON atomically (a crash never leaves half a file)."""
        return write_json(path, self.to_json())


@dataclass
class TeacherPass:
    """The teacher's one pass over a document: every no-think score, and the key/value cache of the pass, which the
    policy's thoughts reuse as their shared prefix when the teacher shares the policy's weights (step 0)."""

    document_ids: list[int]
    no_think: NoThinkScores
    cache: object
    seconds: float

    def prefix_for(self, policy: ModelHandle, teacher: ModelHandle):
        return self.cache if teacher.shares_weights_with(policy) else None


def run_teacher_pass(teacher: ModelHandle, document_ids: list[int], top_k: int = 0) -> TeacherPass:
    """Run the teacher over the document once (`top_k`: also keep its k most likely next tokens per position)."""
    start = time.perf_counter()
    no_think, cache = no_think_scores(teacher, document_ids, top_k=top_k)
    return TeacherPass(list(document_ids), no_think, cache, time.perf_counter() - start)


def ensure_teacher_pass(
    done: TeacherPass | None, teacher: ModelHandle, document_ids: list[int], top_k: int = 0
) -> TeacherPass:
    """`done` if it is this teacher's pass over this document with at least `top_k` next tokens kept, else a new pass."""
    if done is not None and (done.document_ids != list(document_ids) or done.no_think.model != teacher.label):
        raise WorkbenchError("the teacher pass given was made on another document or by another teacher")
    kept = 0 if done is None or done.no_think.top_ids is None else done.no_think.top_ids.shape[1]
    if done is None or kept < top_k:
        return run_teacher_pass(teacher, document_ids, top_k)
    return done


def empty_thought_logp(
    policy: ModelHandle,
    document_ids: list[int],
    positions: list[int],
    template: ThoughtTemplate = ThoughtTemplate(),
    prefix=None,
    count=None,
) -> np.ndarray:
    """log p_policy(x_t | x_<t, open close) at each position: the score of not thinking at all (the empty thought,
    given to the sampler's decode loop: just the two markers, on the same shared prefix). `count` (a
    `engine.thought.ForwardCount`) gets what the pass ran."""
    sampler = ThoughtSampler(policy, template, SamplingConfig(G=1, thought_tokens=0))
    out = np.array([th.logp_with_thought for th in sampler.score(document_ids, [(t, []) for t in positions], prefix)])
    if count is not None:
        count.add(*sampler.compute.take())
    return out


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
    teacher_pass: TeacherPass | None = None,
    top_k: int = 0,
) -> RewardMap:
    """Sample G thoughts at the chosen positions of a document and compute every reward.

    `progress`: a callback (done, total), or True for a tqdm bar (a widget in notebooks).
    `empty_reference`: also score the empty thought at each position (cheap: two markers per row).
    `backend`: the thought sampler's backend, "transformers" or "vllm" (the no-think teacher pass is
    always transformers: one forward over the document). `teacher_pass`: the teacher's pass over this document,
    if already made (`run_teacher_pass`), so it is not run again. `top_k` > 0 keeps each thought's k most likely next
    tokens (`Thought.next_top`: what the model would answer after its thought).
    """
    spec = parse_positions(positions) if isinstance(positions, str) else positions
    config = config.validate()
    sampler = make_sampler(policy, template, config, max_rows=max_rows, backend=backend)
    shared = teacher.shares_weights_with(policy)

    done = ensure_teacher_pass(teacher_pass, teacher, document_ids)
    no_think, score_s = done.no_think, done.seconds

    chosen = select_positions(
        spec,
        len(document_ids),
        seed=config.seed,
        entropy=no_think.entropy,
        marked=getattr(document_ids, "marked", None),
    )
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        # units: each thought's token budget plus its score, so the bar and its estimate move every decode step
        bar = tqdm(
            total=len(chosen) * config.G * (config.thought_tokens + 1),
            desc=f"{len(chosen) * config.G} thoughts",
            unit="tok",
            leave=False,
        )

        def progress(done: int, total: int) -> None:
            bar.n = done
            bar.refresh()

    start = time.perf_counter()
    prefix = done.cache if shared else None
    thoughts = sampler.sample(document_ids, chosen, prefix=prefix, progress=progress or None, top_k=top_k)
    sample_s = time.perf_counter() - start
    if bar is not None:
        bar.close()
    empty: dict[int, float] = {}
    if empty_reference and chosen:
        empty = dict(zip(chosen, empty_thought_logp(policy, document_ids, chosen, template, prefix).tolist()))

    return record_rewards(
        policy,
        teacher,
        template,
        config,
        str(spec),
        document_ids,
        no_think,
        chosen,
        thoughts,
        {"score_s": score_s, "sample_s": sample_s},
        empty,
        "sampled",
    )


def record_rewards(
    policy: ModelHandle,
    teacher: ModelHandle,
    template: ThoughtTemplate,
    config: SamplingConfig,
    spec: str,
    document_ids: list[int],
    no_think: NoThinkScores,
    positions: list[int],
    thoughts: list[Thought],
    timing: dict[str, float],
    empty: dict[int, float],
    source: str,
) -> RewardMap:
    """The RewardMap of scored thoughts, with the labels, dtype, hardware and token texts filled in one way."""
    tok = policy.tokenizer
    return RewardMap(
        model=policy.label,
        teacher=teacher.label,
        dtype=str(policy.dtype).replace("torch.", ""),
        template=template,
        config=config,
        positions_spec=spec,
        document_ids=list(document_ids),
        tokens=[tok.decode([i]) for i in document_ids],
        no_think=no_think,
        positions=positions,
        thoughts=thoughts,
        timing=timing,
        empty_logp=empty,
        hardware=policy.dtype_choice.as_dict() if policy.dtype_choice else {},
        source=source,
    )


def thought_ids(
    policy: ModelHandle, thought: str | Sequence[int], template: ThoughtTemplate = ThoughtTemplate()
) -> list[int]:
    """The token ids of a given thought: text is encoded on its own, without special tokens (so it is placed between
    the markers exactly as written); ids are taken as they are. A thought may not contain the closing marker."""
    tok = policy.tokenizer
    if isinstance(thought, str):
        ids = list(tok.encode(thought, add_special_tokens=False))
    else:
        ids = [int(i) for i in thought]
        vocab = policy.model.get_output_embeddings().weight.shape[0]
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise WorkbenchError(f"thought token ids must lie in [0, {vocab}), got {bad[:5]}")
    if template.close in tok.decode(ids):
        raise WorkbenchError(f"a thought must not contain the closing marker {template.close!r}: {tok.decode(ids)!r}")
    return ids


def score_thoughts(
    policy: ModelHandle,
    teacher: ModelHandle,
    document_ids: list[int],
    thoughts: Sequence,
    position: int | None = None,
    template: ThoughtTemplate = ThoughtTemplate(),
    config: SamplingConfig = SamplingConfig(),
    empty_reference: bool = True,
    top_k: int = 0,
    teacher_pass: TeacherPass | None = None,
    progress: Callable[[int, int], None] | bool | None = None,
    max_rows: int = 256,
    exact: bool = True,
) -> RewardMap:
    """Score given thoughts as sampled ones are scored, into the same record type as `reward_map`.

    `thoughts`: (position, thought) pairs, or, with `position`, the thoughts at that one position; a thought is text
    or token ids (`thought_ids`). Several may share a position (they form its group, in the order given). Each is
    fed through the sampler's decode loop on the shared document prefix, so the ids of sampled thoughts given back in
    sampling order reproduce their rewards bitwise. `config`: its seed, temperature and top_p are what designs that
    generate after a thought (RPT, PretrainZero, RLPT) sample with. `top_k` > 0 records the policy's k most likely
    next tokens after each thought (`Thought.next_top`) and the teacher's without one (`no_think.top_ids`).
    `exact=False` feeds each thought in one forward instead of token by token (`ThoughtSampler.score`): equal up to
    float rounding, faster for a single long thought.
    """
    if isinstance(thoughts, str):  # one thought, not its characters
        thoughts = [thoughts]
    pairs = [(position, th) for th in thoughts] if position is not None else list(thoughts)
    try:
        given = [(int(t), thought_ids(policy, th, template)) for t, th in pairs]
    except (TypeError, ValueError) as exc:
        raise WorkbenchError(f"thoughts must be (position, text or token ids) pairs: {exc}") from None
    if not given:
        raise WorkbenchError("no thoughts to score")
    ThoughtSampler.check_positions(document_ids, [t for t, _ in given])
    done = ensure_teacher_pass(teacher_pass, teacher, document_ids, top_k)
    prefix = done.prefix_for(policy, teacher)
    counts: dict[int, int] = {}
    for t, _ in given:
        counts[t] = counts.get(t, 0) + 1
    config = dataclasses.replace(
        config.validate(),
        G=max(counts.values()),
        thought_tokens=max(len(ids) for _, ids in given),
        min_thought_tokens=0,
    )
    sampler = ThoughtSampler(policy, template, config, max_rows=max_rows)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(given), desc=f"{len(given)} given thoughts", unit="tok", leave=False)

        def progress(done_units: int, total: int) -> None:
            bar.total = total
            bar.n = done_units
            bar.refresh()

    start = time.perf_counter()
    scored = sampler.score(document_ids, given, prefix, progress or None, top_k=top_k, exact=exact)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    chosen = sorted(counts)
    empty: dict[int, float] = {}
    if empty_reference:
        empty = dict(zip(chosen, empty_thought_logp(policy, document_ids, chosen, template, prefix).tolist()))
    return record_rewards(
        policy,
        teacher,
        template,
        config,
        "at:" + ",".join(str(t) for t in chosen),
        document_ids,
        done.no_think,
        chosen,
        scored,
        {"score_s": 0.0 if done is teacher_pass else done.seconds, "sample_s": seconds},
        empty,
        "given",
    )
