"""Browse the thoughts a run sampled (its `rollouts.jsonl`): which thoughts earned reward, at which step, how long.

Two views of the same records:
- `rollout_figure(records)`: a plotly figure that needs no kernel, so it works in an exported HTML report: every
  thought as a point (length across, reward up, colour = advantage; hover shows the context, the thought and its
  numbers) above a table of the thoughts sorted by reward; a slider picks one step or all of them. Zoom into the
  scatter to look at a range of rewards and lengths.
- `RolloutBrowser(records)`: ipywidgets in a live kernel: step range, reward range and length range filters over a
  table (what the figure cannot do offline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLUMNS = ["step", "position", "target", "thought", "reward", "content_gain", "advantage", "length", "closed_by"]
TABLE_ROWS = 60  # rows per table in the figure: the HTML stays small (rollouts.jsonl has every thought)


def rollout_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The records as a table, one row per thought (text flattened to one line)."""
    if not records:
        raise ValueError("no rollouts: the run dumped no thoughts (an RLP run writes rollouts.jsonl)")
    frame = pd.DataFrame(list(records))
    for col in ("thought", "context_tail", "target"):
        frame[col] = frame[col].astype(str).str.replace("\n", "⏎", regex=False)
    return frame


def _hover(frame: pd.DataFrame) -> list[str]:
    return [
        f"step {r.step} · position {r.position} · next token {r.target!r}<br>…{r.context_tail[-80:]}"
        f"<br><b>thought</b> ({r.length} tokens, closed by {r.closed_by}): {r.thought[:140]}"
        f"<br>reward {r.reward:+.2f} · content gain {r.content_gain:+.2f} · advantage {r.advantage:+.2f}"
        for r in frame.itertuples()
    ]


def _table(frame: pd.DataFrame, visible: bool) -> go.Table:
    top = frame.sort_values("reward", ascending=False).head(TABLE_ROWS)
    cells = [top[c].round(2) if top[c].dtype.kind == "f" else top[c] for c in COLUMNS]
    return go.Table(
        header={"values": COLUMNS, "align": "left"},
        visible=visible,
        columnwidth=[4, 6, 6, 40, 6, 8, 7, 6, 7],
        cells={"values": cells, "align": "left", "height": 22},
    )


def rollout_figure(records: Sequence[dict[str, Any]], title: str = "sampled thoughts") -> go.Figure:
    """A static, self-contained browser of a run's thoughts: scatter (length, reward) and a table, per step or all."""
    frame = rollout_frame(records)
    steps = sorted(int(s) for s in frame["step"].unique())
    scale = max(float(frame["advantage"].abs().max()), 1e-9)
    fig = make_subplots(
        rows=2,
        cols=1,
        row_heights=[0.45, 0.55],
        vertical_spacing=0.08,
        specs=[[{"type": "scatter"}], [{"type": "table"}]],
    )
    for step in steps:  # one scatter trace per step (all visible at first), then the tables
        part = frame[frame["step"] == step]
        fig.add_trace(
            go.Scatter(
                x=part["length"],
                y=part["reward"],
                mode="markers",
                name=f"step {step}",
                text=_hover(part),
                hovertemplate="%{text}<extra></extra>",
                marker={
                    "color": part["advantage"],
                    "colorscale": "RdBu",
                    "cmid": 0,
                    "cmin": -scale,
                    "cmax": scale,
                    "size": 9,
                    "line": {"width": 0.5, "color": "#444"},
                    "colorbar": {"title": "advantage", "len": 0.45, "y": 0.78} if step == steps[0] else None,
                    "showscale": step == steps[0],
                },
            ),
            row=1,
            col=1,
        )
    fig.add_trace(_table(frame, True), row=2, col=1)  # all steps
    for step in steps:
        fig.add_trace(_table(frame[frame["step"] == step], False), row=2, col=1)
    n = len(steps)

    def visibility(which: int | None) -> list[bool]:
        scatter = [which is None or k == which for k in range(n)]
        tables = [which is None] + [k == which for k in range(n)]
        return scatter + tables

    choices = [("all", None)] + [(str(s), k) for k, s in enumerate(steps)]
    fig.update_layout(
        title=f"{title}: {len(frame)} thoughts over {n} steps (zoom the scatter to a range of rewards and lengths)",
        height=820,
        showlegend=False,
        margin={"t": 60, "b": 90},
        sliders=[
            {
                "active": 0,
                "currentvalue": {"prefix": "step "},
                "pad": {"t": 20},
                "y": -0.02,
                "steps": [
                    {"label": label, "method": "update", "args": [{"visible": visibility(which)}]}
                    for label, which in choices
                ],
            }
        ],
    )
    fig.update_xaxes(title_text="thought length (tokens)", row=1, col=1)
    fig.update_yaxes(title_text="reward (nats)", row=1, col=1)
    return fig


class RolloutBrowser:
    """Filters over a run's thoughts in a live kernel: steps, reward range, length range; the matching thoughts as a
    table sorted by reward (at most `rows`). `display(RolloutBrowser(records).widget)`."""

    def __init__(self, records: Sequence[dict[str, Any]], rows: int = 30) -> None:
        import ipywidgets as w

        self.frame = rollout_frame(records)
        self.rows = rows
        f = self.frame
        lo, hi = float(f["reward"].min()), float(f["reward"].max())
        self.steps = w.IntRangeSlider(
            value=(int(f["step"].min()), int(f["step"].max())),
            min=int(f["step"].min()),
            max=int(f["step"].max()),
            description="steps",
        )
        self.reward = w.FloatRangeSlider(
            value=(lo, hi), min=lo, max=hi, step=max((hi - lo) / 100, 1e-3), description="reward", readout_format=".2f"
        )
        self.length = w.IntRangeSlider(
            value=(int(f["length"].min()), int(f["length"].max())),
            min=int(f["length"].min()),
            max=int(f["length"].max()),
            description="length",
        )
        self.count = w.HTML()
        self.table = w.Output()
        for control in (self.steps, self.reward, self.length):
            control.observe(lambda _: self.refresh(), names="value")
        self.widget = w.VBox([w.HBox([self.steps, self.reward, self.length]), self.count, self.table])
        self.refresh()

    def selected(self) -> pd.DataFrame:
        f = self.frame
        keep = (
            f["step"].between(*self.steps.value)
            & f["reward"].between(*self.reward.value)
            & f["length"].between(*self.length.value)
        )
        return f[keep].sort_values("reward", ascending=False)

    def refresh(self) -> None:
        from IPython.display import display

        chosen = self.selected()
        self.count.value = f"{len(chosen)} of {len(self.frame)} thoughts"
        self.table.clear_output(wait=True)
        with self.table:
            display(chosen[COLUMNS].head(self.rows).round(2).style.hide(axis="index"))
