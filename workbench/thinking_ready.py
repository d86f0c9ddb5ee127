"""Does a model read its thoughts? Probe thoughts at the marked answers of the thinking corpus: the registered probe
families (empty, leak, neutral) and the corpus's own thoughts (a correct scratchpad, a restatement).

    policy = load_model(thinking_ready_model("gemma3-270m"))   # workbench.training.warm_start: trained once, cached
    answer_probes(policy, documents)                              # probe families at the marked answers
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from workbench.data import Document, DocumentIds, tokenize_document
from workbench.engine.thought import SamplingConfig, ThoughtTemplate
from workbench.errors import WorkbenchError
from workbench.models import ModelHandle
from workbench.probes import ProbeContext, ProbeMap, probe_map

# --------------------------------------------------------------------------- probes at the answers


def corpus_thought_probe(doc: Document, ids: DocumentIds, style: str):
    """A probe family that writes the corpus's own thought of `style` before each marked answer (scratch: a correct
    scratchpad; restate: a restatement that computes nothing)."""
    if len(doc.answer_thoughts) != len(doc.answers):
        raise WorkbenchError(f"document {doc.id} has no per-answer thoughts (answer_thoughts); use the thinking corpus")
    by_position = {t: dict(options)[style] for t, options in zip(ids.marked, doc.answer_thoughts)}

    def probe(ctx: ProbeContext) -> str:
        return by_position[ctx.position]

    return probe


def answer_probes(
    policy: ModelHandle,
    documents: Sequence[Document],
    teacher: ModelHandle | None = None,
    families: Sequence[str] = ("empty", "leak", "neutral"),
    corpus_styles: Sequence[str] = ("scratch", "restate", "slip"),
    template: ThoughtTemplate = ThoughtTemplate(),
    max_tokens: int | None = 512,
    progress: bool = False,
) -> tuple[pd.DataFrame, list[ProbeMap]]:
    """Probe thoughts at every marked answer of `documents`: the registered `families` and the corpus's own thoughts
    (`corpus_styles`). Returns the per-family summary over all documents (mean reward, share positive, mean content
    gain, ...) and each document's ProbeMap."""
    teacher = teacher or policy
    maps = []
    for doc in documents:
        ids = tokenize_document(policy.tokenizer, doc, max_tokens)
        if not ids.marked:
            raise WorkbenchError(f"document {doc.id} has no marked answers")
        fams: dict[str, Any] = {name: None for name in families}
        fams.update({style: corpus_thought_probe(doc, ids, style) for style in corpus_styles})
        maps.append(
            probe_map(
                policy,
                teacher,
                ids,
                list(ids.marked),
                fams,
                template=template,
                config=SamplingConfig(thought_tokens=64),
                progress=progress,
            )
        )
    frame = pd.concat([m.frame() for m in maps], ignore_index=True)
    names = list(maps[0].families)
    summary = (
        frame.groupby("family", sort=False)
        .agg(
            reward_mean=("reward", "mean"),
            share_positive=("reward", lambda r: float((r > 0).mean())),
            content_gain_mean=("content_gain", "mean"),
            share_content_gain_positive=("content_gain", lambda g: float((g > 0).mean())),
            positions=("reward", "size"),
        )
        .loc[names]
    )
    return summary, maps


def best_family_shares(maps: Sequence[ProbeMap]) -> pd.Series:
    """At how many answers each family has the highest reward ('empty' best = no thought beats every thought)."""
    tables = pd.concat([m.table("reward") for m in maps], ignore_index=True)
    return tables.idxmax(axis=1).value_counts(normalize=True).reindex(tables.columns, fill_value=0.0)


# --------------------------------------------------------------------------- the model's own thoughts at the answers


def own_thoughts(
    policy: ModelHandle,
    documents: Sequence[Document],
    G: int = 4,
    thought_tokens: int = 48,
    seed: int = 0,
    teacher: ModelHandle | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per thought the model samples at every marked answer of `documents` (temperature 0.7, |c| >= 1):
    the answer's family, the thought's style, whether the answer is the most likely token after it, its reward and
    content gain."""
    from workbench.evaluation import answer_after
    from workbench.rewards import reward_map
    from workbench.thinking_corpus import thought_style

    rows = []
    config = SamplingConfig(G=G, thought_tokens=thought_tokens, min_thought_tokens=1, seed=seed)
    for d, doc in enumerate(documents):
        ids = tokenize_document(policy.tokenizer, doc)
        if not ids.marked:
            continue
        rm = reward_map(policy, teacher or policy, ids, "marked", config, top_k=1, progress=progress)
        for th, reward, gain in zip(rm.thoughts, rm.rewards, rm.content_gains):
            rows.append(
                {
                    "doc": d,
                    "position": th.position,
                    "family": ids.families.get(th.position, ""),
                    "style": thought_style(th.text),
                    "right": bool(answer_after(th) == ids[th.position]),
                    "reward": float(reward),
                    "content_gain": float(gain),
                    "closed_by": th.closed_by,
                }
            )
    return pd.DataFrame(rows)


def style_margin(own: pd.DataFrame, better: str = "scratch", than: str = "restate") -> dict[str, float]:
    """E[r | better] - E[r | than] over a model's own thoughts (`own_thoughts`), with its standard error
    (sqrt(var_a/n_a + var_b/n_b): thoughts taken as independent, which the G thoughts of one answer are not quite, so
    read it as a lower bound) and the counts. RLP can only prefer scratchpads where this margin is positive: the
    advantages compare thoughts of one answer, and a style that earns less on average is pushed down."""
    a = own.loc[own["style"] == better, "reward"] if len(own) else pd.Series(dtype=float)
    b = own.loc[own["style"] == than, "reward"] if len(own) else pd.Series(dtype=float)
    out = {f"n_{better}": float(len(a)), f"n_{than}": float(len(b))}
    if len(a) < 2 or len(b) < 2:
        return {**out, "margin": float("nan"), "se": float("nan")}
    se = (a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) ** 0.5
    return {
        **out,
        "margin": float(a.mean() - b.mean()),
        "se": float(se),
        f"right_{better}": float(own.loc[own["style"] == better, "right"].mean()),
    }
