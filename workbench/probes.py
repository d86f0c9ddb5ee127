"""Probe thoughts: hand-made thoughts built from the document itself, to see what a reward can see.

At every chosen position t the same families of thoughts are scored, exactly as sampled thoughts are
(`rewards.score_thoughts`):

    empty       nothing between the markers: what inserting `<think></think>` alone does (the format cost)
    leak        "The next word is" + the true next token x_t: the most informative thought there is
    echo        the last six context tokens before x_t, repeated: on topic, but says nothing new
    wrong_hint  "The next word is" + the teacher's most likely token other than x_t: plausible and wrong
    neutral     a fixed sentence unrelated to the text

A reward that measures information should order leak > echo > neutral and leak > wrong_hint; on a small base
model at step 0 the empty thought often beats them all, because the markers cost more than any words can add
(shared/reference/rewards.md, "At step 0 the reward measures the format break"). Users add families with
`register_probe`, or pass a text template with the fields {next}, {guess} and {context}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench.data import PositionSpec, parse_positions, select_positions
from workbench.engine.scorer import NoThinkScores
from workbench.engine.thought import SamplingConfig, ThoughtTemplate
from workbench.errors import WorkbenchError
from workbench.models import ModelHandle
from workbench.rewards import RewardMap, TeacherPass, ensure_teacher_pass, score_thoughts

NEXT_WORD = "The next word is"  # leak and wrong_hint differ only in the token after it
NEUTRAL = "I will keep reading the text."
ECHO_TOKENS = 6


@dataclass(frozen=True)
class ProbeContext:
    """What a probe family may read to write its thought for the target x_t at one position t."""

    tokenizer: object
    document_ids: list[int]
    position: int
    no_think: NoThinkScores  # the teacher's scores, with at least its top-2 next tokens per position

    @property
    def target_id(self) -> int:
        return self.document_ids[self.position]

    @property
    def runner_up_id(self) -> int:
        """The teacher's most likely next token other than the true one."""
        return self.no_think.runner_up(self.position, self.target_id)

    def context_ids(self, n: int = ECHO_TOKENS) -> list[int]:
        """The last n tokens before x_t (never a leading special token such as <bos>)."""
        special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        return [i for i in self.document_ids[max(0, self.position - n) : self.position] if i not in special]

    def text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)


ProbeFn = Callable[[ProbeContext], "str | list[int]"]  # a thought as text or token ids
PROBE_FAMILIES: dict[str, ProbeFn] = {}


def register_probe(name: str) -> Callable[[ProbeFn], ProbeFn]:
    """Add a probe family: a function from a ProbeContext to a thought (text or token ids)."""

    def add(fn: ProbeFn) -> ProbeFn:
        PROBE_FAMILIES[name] = fn
        return fn

    return add


def _next_word(ctx: ProbeContext, token: int) -> list[int]:
    return list(ctx.tokenizer.encode(NEXT_WORD, add_special_tokens=False)) + [token]


@register_probe("empty")
def empty_probe(ctx: ProbeContext) -> list[int]:
    return []


@register_probe("leak")
def leak_probe(ctx: ProbeContext) -> list[int]:
    return _next_word(ctx, ctx.target_id)


@register_probe("echo")
def echo_probe(ctx: ProbeContext) -> list[int]:
    return ctx.context_ids(ECHO_TOKENS)


@register_probe("wrong_hint")
def wrong_hint_probe(ctx: ProbeContext) -> list[int]:
    return _next_word(ctx, ctx.runner_up_id)


@register_probe("neutral")
def neutral_probe(ctx: ProbeContext) -> str:
    return NEUTRAL


def template_probe(template: str) -> ProbeFn:
    """A family from a text template: {next} is the true next token's text, {guess} the teacher's most likely wrong
    token's, {context} the last six context tokens' (tokens stripped of surrounding white space)."""
    try:
        template.format(next="", guess="", context="")
    except (KeyError, IndexError, ValueError) as exc:
        raise WorkbenchError(
            f"probe template {template!r}: use only the fields {{next}}, {{guess}}, {{context}} ({exc})"
        ) from None

    def probe(ctx: ProbeContext) -> str:
        fields = {"next": ctx.text([ctx.target_id]).strip(), "context": ctx.text(ctx.context_ids()).strip()}
        if "{guess}" in template:
            fields["guess"] = ctx.text([ctx.runner_up_id]).strip()
        return template.format(**{"guess": "", **fields})

    return probe


def resolve_families(families: Sequence[str] | Mapping[str, ProbeFn | str | None] | None) -> dict[str, ProbeFn]:
    """Family names (registered) and/or name -> function or text template, in order; None means every registered one."""
    if families is None:
        return dict(PROBE_FAMILIES)
    items = families.items() if isinstance(families, Mapping) else [(name, None) for name in families]
    out: dict[str, ProbeFn] = {}
    for name, fn in items:
        if fn is None:
            if name not in PROBE_FAMILIES:
                raise WorkbenchError(f"unknown probe family {name!r}; registered: {', '.join(PROBE_FAMILIES)}")
            fn = PROBE_FAMILIES[name]
        out[name] = template_probe(fn) if isinstance(fn, str) else fn
    if not out:
        raise WorkbenchError("no probe families given")
    return out


@dataclass
class ProbeMap:
    """Every probe thought at every chosen position, scored like sampled thoughts: one group per position."""

    reward_map: RewardMap  # source "given"; the thoughts in order of position, then family
    families: list[str]
    family_of: list[str]  # the family of each thought of reward_map

    def frame(self) -> pd.DataFrame:
        """One row per probe thought: the reward map's columns plus its family."""
        df = self.reward_map.to_dataframe()
        df.insert(3, "family", self.family_of)
        return df

    def table(self, value: str = "reward") -> pd.DataFrame:
        """Positions x families of `value` ("reward", "content_gain" or "logp_with_thought")."""
        return self.frame().pivot(index="position", columns="family", values=value)[self.families]

    def summary(self) -> pd.DataFrame:
        """Per family: mean reward, share positive, mean content gain and share of it positive, mean length."""
        df = self.frame()
        grouped = df.groupby("family", sort=False)
        out = grouped.agg(
            reward_mean=("reward", "mean"),
            share_positive=("reward", lambda r: float((r > 0).mean())),
            content_gain_mean=("content_gain", "mean"),
            share_content_gain_positive=("content_gain", lambda g: float((g > 0).mean())),
            thought_tokens_mean=("thought_tokens", "mean"),
        )
        return out.loc[self.families]

    def example(self, position: int) -> pd.DataFrame:
        """The probes at one position: family, thought, reward and content gain."""
        df = self.frame()
        return df[df["position"] == position][["family", "thought", "logp_with_thought", "reward", "content_gain"]]

    def spread_positions(self, family: str = "leak", k: int = 3) -> list[int]:
        """k positions spanning `family`'s content gain, highest first (for a short static showcase)."""
        gains = self.table("content_gain")[family].dropna().sort_values(ascending=False)
        if gains.empty:
            return []
        picks = np.linspace(0, len(gains) - 1, min(k, len(gains))).round().astype(int)
        return [int(gains.index[i]) for i in dict.fromkeys(picks)]

    def to_json(self) -> dict:
        out = self.reward_map.to_json()
        families = iter(self.family_of)
        for pos in out["positions"]:
            for th in pos["thoughts"]:
                th["family"] = next(families)
        out["families"] = list(self.families)
        out["family_summary"] = {name: {k: float(v) for k, v in row.items()} for name, row in self.summary().iterrows()}
        return out


def probe_map(
    policy: ModelHandle,
    teacher: ModelHandle,
    document_ids: list[int],
    positions: str | PositionSpec | Sequence[int] = "every:16",
    families: Sequence[str] | Mapping[str, ProbeFn | str | None] | None = None,
    template: ThoughtTemplate = ThoughtTemplate(),
    config: SamplingConfig = SamplingConfig(),
    teacher_pass: TeacherPass | None = None,
    progress: bool = False,
) -> ProbeMap:
    """Score every probe family at the chosen positions (a spec such as "every:16", or a list of positions).

    With the "empty" family, the empty-thought reference of the content gain is that family's own score."""
    fns = resolve_families(families)
    done = ensure_teacher_pass(teacher_pass, teacher, document_ids, top_k=2)
    if isinstance(positions, (str, PositionSpec)):
        spec = parse_positions(positions) if isinstance(positions, str) else positions
        chosen = select_positions(
            spec,
            len(document_ids),
            seed=config.seed,
            entropy=done.no_think.entropy,
            marked=getattr(document_ids, "marked", None),
        )
    else:
        chosen = sorted(set(int(t) for t in positions))
    if not chosen:
        raise WorkbenchError("no positions to probe")
    given, family_of = [], []
    for t in chosen:
        ctx = ProbeContext(policy.tokenizer, list(document_ids), t, done.no_think)
        for name, fn in fns.items():
            given.append((t, fn(ctx)))
            family_of.append(name)
    rm = score_thoughts(
        policy,
        teacher,
        document_ids,
        given,
        template=template,
        config=config,
        empty_reference="empty" not in fns,
        teacher_pass=done,
        progress=progress or None,
    )
    if "empty" in fns:
        rm.empty_logp = {th.position: th.logp_with_thought for th, f in zip(rm.thoughts, family_of) if f == "empty"}
    return ProbeMap(rm, list(fns), family_of)


def headroom(sampled: RewardMap, probes: ProbeMap) -> pd.DataFrame:
    """Per position scored by both: the best sampled reward, the best probe (and its family), and
    headroom = best probe reward - best sampled reward (how far sampling is from what a thought could reach)."""
    s = sampled.per_position().set_index("position")
    df = probes.frame()
    best = df.loc[df.groupby("position")["reward"].idxmax()].set_index("position")
    both = s.index.intersection(best.index)
    if both.empty:
        raise WorkbenchError("the sampled map and the probes share no position")
    out = pd.DataFrame(
        {
            "target": s.loc[both, "target"],
            "best_sampled": s.loc[both, "reward_max"],
            "best_probe": best.loc[both, "reward"],
            "best_family": best.loc[both, "family"],
            "empty_thought_reward": best.loc[both, "empty_thought_reward"],
        }
    )
    out["headroom"] = out["best_probe"] - out["best_sampled"]
    return out.reset_index()


def family_order_shares(table: pd.DataFrame) -> dict[str, float]:
    """From positions x families rewards: the share of positions where a reward orders the probes as information
    would (leak > echo > neutral, leak > wrong_hint; strict, so ties fail) and where the empty thought beats both
    informative probes. NaN where a family is missing."""

    def share(mask) -> float:
        return float(np.mean(mask)) if len(mask) else float("nan")

    has = set(table.columns)
    nan = float("nan")
    return {
        "leak>echo>neutral": share((table["leak"] > table["echo"]) & (table["echo"] > table["neutral"]))
        if {"leak", "echo", "neutral"} <= has
        else nan,
        "leak>wrong_hint": share(table["leak"] > table["wrong_hint"]) if {"leak", "wrong_hint"} <= has else nan,
        "empty>informative": share(table["empty"] > table[["leak", "echo"]].max(axis=1))
        if {"empty", "leak", "echo"} <= has
        else nan,
    }
