"""The thought lab: type a thought at a position of a document and see at once what it is worth.

The teacher passes over the document once (`ThoughtLab(...)`); after that, scoring one thought is one forward of its
markers and words on the document's cached keys and values (`rewards.score_thoughts(..., exact=False)`: the decode
loop's numbers up to float rounding, without one model step per token): its reward, its content gain (reward - the
empty thought's reward at that position) and the policy's most likely next tokens with the thought next to the
teacher's without one.

`thought_editor` wraps it in ipywidgets for a live notebook; `static_probe_tables` is what the same notebook cell
shows when it runs headlessly (no one types under papermill).
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from workbench.engine.thought import Thought, ThoughtTemplate
from workbench.models import ModelHandle
from workbench.probes import ProbeMap
from workbench.rewards import TeacherPass, empty_thought_logp, ensure_teacher_pass, info_gain, score_thoughts
from workbench.run_dirs import headless  # noqa: F401  (notebook 02 imports it from here)


@dataclass
class LabResult:
    """One scored thought at one position, with the two next-token distributions."""

    position: int
    target: str
    thought: Thought
    reward: float  # nats: log p_policy(x_t | context, thought) - log p_teacher(x_t | context)
    empty_reward: float  # the empty thought's reward at this position (the format cost)
    logp_no_think: float
    with_thought: list[tuple[str, float]]  # the policy's top-k next tokens after the thought: (text, log p)
    without: list[tuple[str, float]]  # the teacher's top-k without a thought
    seconds: float

    @property
    def content_gain(self) -> float:
        return self.reward - self.empty_reward


class ThoughtLab:
    """One document, passed through the teacher once; then any thought at any position, scored as a sampled one
    would be (to float rounding)."""

    def __init__(
        self,
        policy: ModelHandle,
        teacher: ModelHandle,
        document_ids: list[int],
        template: ThoughtTemplate = ThoughtTemplate(),
        top_k: int = 8,
        teacher_pass: TeacherPass | None = None,
    ) -> None:
        self.policy, self.teacher, self.template, self.top_k = policy, teacher, template, top_k
        self.document_ids = list(document_ids)
        self.teacher_pass = ensure_teacher_pass(teacher_pass, teacher, self.document_ids, top_k)
        self.tokens = [policy.tokenizer.decode([i]) for i in self.document_ids]
        self._empty: dict[int, float] = {}

    @property
    def no_think(self):
        return self.teacher_pass.no_think

    def empty_reward(self, position: int) -> float:
        """The empty thought's reward at `position` (computed once per position)."""
        if position not in self._empty:
            prefix = self.teacher_pass.prefix_for(self.policy, self.teacher)
            logp = empty_thought_logp(self.policy, self.document_ids, [position], self.template, prefix)[0]
            self._empty[position] = float(info_gain(logp, self.no_think.logp[position]))
        return self._empty[position]

    def score(self, position: int, thought: str | Sequence[int]) -> LabResult:
        """Score one thought (text, or token ids) at `position`."""
        empty = self.empty_reward(position)
        start = time.perf_counter()
        rm = score_thoughts(
            self.policy,
            self.teacher,
            self.document_ids,
            [thought],
            position=position,
            template=self.template,
            empty_reference=False,
            top_k=self.top_k,
            teacher_pass=self.teacher_pass,
            exact=False,
        )
        seconds = time.perf_counter() - start
        th = rm.thoughts[0]
        decode = self.policy.tokenizer.decode
        nt = self.no_think
        return LabResult(
            position=position,
            target=self.tokens[position],
            thought=th,
            reward=float(rm.rewards[0]),
            empty_reward=empty,
            logp_no_think=float(nt.logp[position]),
            with_thought=[(decode([i]), lp) for i, lp in th.next_top],
            without=[(decode([int(i)]), float(lp)) for i, lp in zip(nt.top_ids[position], nt.top_logp[position])],
            seconds=seconds,
        )


def _distribution_table(result: LabResult) -> str:
    """The top-k next tokens without and with the thought, side by side; the true next token in bold."""
    import math

    def cell(pair) -> str:
        text, lp = pair
        shown = html.escape(repr(text))
        if text == result.target:
            shown = f"<b>{shown}</b>"
        return f"<td style='text-align:left'>{shown}</td><td>{math.exp(lp):.3f}</td>"

    rows = "".join(f"<tr>{cell(a)}{cell(b)}</tr>" for a, b in zip(result.without, result.with_thought))
    from workbench.viz import padded

    return padded(
        "<table style='font-size:12px;border-collapse:collapse'>"
        "<tr><th colspan=2>without a thought (teacher)</th><th colspan=2>with the thought (policy)</th></tr>"
        f"{rows}</table>"
    )


def result_html(result: LabResult) -> str:
    from workbench.viz import diverging_color, no_math

    def badge(value: float) -> str:
        return f"<span style='background:{diverging_color(value, 5.0)};padding:0 4px'>{value:+.3f}</span>"

    return no_math(
        f"<p style='font-family:sans-serif'>thought <code>{html.escape(result.thought.text) or '(empty)'}</code> "
        f"({result.thought.length} tokens) at t = {result.position}, target <code>{html.escape(repr(result.target))}</code>"
        f"<br>reward {badge(result.reward)} nats = log p with thought {result.thought.logp_with_thought:+.3f} "
        f"- log p without {result.logp_no_think:+.3f}<br>"
        f"content gain {badge(result.content_gain)} nats = reward - empty thought's reward {result.empty_reward:+.3f}"
        f"<br><small>scored in {result.seconds * 1000:.0f} ms</small></p>" + _distribution_table(result)
    )


def thought_editor(lab: ThoughtLab, positions: Sequence[int], probes: ProbeMap | None = None):
    """ipywidgets: pick a position, type a thought, press Enter (or the button): its reward, content gain and the
    next-token distributions with and without it. With `probes`, the position's probe families are listed too,
    with every thought typed there added below them."""
    import ipywidgets as widgets

    from workbench.viz import no_math, probe_table

    options = [(f"t={t} {lab.tokens[t]!r}", int(t)) for t in positions]
    pick = widgets.Dropdown(options=options, description="position")
    text = widgets.Text(
        placeholder="type a thought, then Enter",
        description="thought",
        continuous_update=False,
        layout=widgets.Layout(width="70%"),
    )
    go = widgets.Button(description="score")
    result_box = widgets.HTML()
    table_box = widgets.HTML()
    typed: dict[int, list[dict]] = {}

    def refresh_table() -> None:
        t = pick.value
        if probes is not None:
            extra = pd.DataFrame(
                typed.get(t, []), columns=["family", "thought", "logp_with_thought", "reward", "content_gain"]
            )
            table_box.value = no_math(probe_table(probes, t, extra))

    def score(*_) -> None:
        try:
            result = lab.score(pick.value, text.value)
        except Exception as exc:  # shown in the widget: a typo must not kill the editor
            result_box.value = f"<p style='color:#b2182b'>{html.escape(str(exc))}</p>"
            return
        result_box.value = result_html(result)
        typed.setdefault(pick.value, []).append(
            {
                "family": "typed",
                "thought": result.thought.text,
                "logp_with_thought": result.thought.logp_with_thought,
                "reward": result.reward,
                "content_gain": result.content_gain,
            }
        )
        refresh_table()

    text.observe(lambda change: score(), names="value")
    go.on_click(score)
    pick.observe(lambda change: (refresh_table(), setattr(result_box, "value", "")), names="value")
    refresh_table()
    return widgets.VBox([widgets.HBox([pick]), widgets.HBox([text, go]), result_box, table_box])


def static_probe_tables(probes: ProbeMap, positions: Sequence[int]) -> str:
    """The probe families at a few positions, as one HTML block (the editor's headless stand-in)."""
    from workbench.viz import no_math, probe_table

    return no_math("".join(probe_table(probes, int(t)) for t in positions))
