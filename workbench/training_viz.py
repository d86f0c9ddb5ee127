"""Training curves from metrics.jsonl: static plotly figures for reports, a live chart with a stop button."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.training.trainer import read_metrics

# (metric, title, reference metric drawn dashed in the same panel)
RLP_PANELS: list[tuple[str, str, str | None]] = [
    ("reward_mean", "reward (nats); dashed: empty thought", "empty_thought_reward"),
    ("thought_tokens_mean", "mean thought length (tokens)", None),
    ("share_empty", "share of empty thoughts", None),
    ("eval_loss", "held-out no-think loss (nats/token)", None),
    ("eval_reward_mean", "held-out reward (nats); dashed: empty", "eval_empty_thought_reward"),
    ("grad_norm", "gradient norm (before clipping)", None),
    ("advantage_std", "advantage std", None),
    ("clip_fraction", "clip fraction", None),
    ("teacher_drift", "teacher-policy drift ||θ-φ||/||θ||", None),
]
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _series(rows: list[dict[str, Any]], key: str, x: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and x in row:
            xs.append(row[x])
            ys.append(value)
    return xs, ys


def training_curves(
    runs: dict[str, list[dict[str, Any]] | str | Path],
    panels: list[tuple[str, str, str | None]] = RLP_PANELS,
    x: str = "step",
    cols: int = 3,
    title: str = "",
    drop_empty: bool = True,
) -> go.Figure:
    """One panel per metric, one colour per run. `runs`: label -> metrics rows or a run directory."""
    data = {label: (read_metrics(r) if isinstance(r, (str, Path)) else r) for label, r in runs.items()}
    present = [p for p in panels if not drop_empty or any(_series(rows, p[0], x)[0] for rows in data.values())]
    rows_n = max(1, math.ceil(len(present) / cols))
    fig = make_subplots(
        rows=rows_n, cols=cols, subplot_titles=[p[1] for p in present], horizontal_spacing=0.07, vertical_spacing=0.12
    )
    for i, (key, _, ref) in enumerate(present):
        r, c = divmod(i, cols)
        for j, (label, rows) in enumerate(data.items()):
            color = COLORS[j % len(COLORS)]
            xs, ys = _series(rows, key, x)
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=i == 0,
                    line=dict(color=color),
                ),
                row=r + 1,
                col=c + 1,
            )
            if ref:
                xs, ys = _series(rows, ref, x)
                fig.add_trace(
                    go.Scatter(
                        x=xs,
                        y=ys,
                        mode="lines",
                        name=f"{label}: empty thought",
                        legendgroup=label,
                        showlegend=False,
                        line=dict(color=color, dash="dash"),
                    ),
                    row=r + 1,
                    col=c + 1,
                )
    fig.update_layout(height=280 * rows_n, title=title or None, margin=dict(t=60 if title else 40, b=30))
    fig.update_xaxes(title_text=x, title_standoff=2)
    if x == "step":
        for rows in data.values():
            hacking_band(fig, rows)
    return fig


def hacking_band(fig: go.Figure, rows: list[dict[str, Any]]) -> bool:
    """Mark the steps where the reward-hacking monitor fired (workbench/training/monitor.py) as a red band on every
    panel; True if it did."""
    fired = next((r for r in rows if r.get("reward_hacking_warning")), None)
    if fired is None:
        return False
    start = fired.get("reward_hacking_since_step", fired["step"])
    fig.add_vrect(
        x0=start - 0.5,
        x1=fired["step"] + 0.5,
        fillcolor="crimson",
        opacity=0.12,
        line_width=0,
        row="all",
        col="all",
        annotation_text="reward up, answers down",
        annotation_position="top left",
    )
    return True


def progress_text(rows: list[dict[str, Any]], max_steps: int, running: bool = True) -> str:
    """'step 3/6, ~40 s left' from the metrics rows so far (the estimate: mean step time x steps left)."""
    step = rows[-1].get("step", 0) if rows else 0
    if not max_steps:
        return f"step {step}"
    times = [r["step_time_s"] for r in rows if isinstance(r.get("step_time_s"), (int, float))]
    left = max(0, max_steps - step)
    if running and times and left:
        return f"step {step}/{max_steps}, ~{left * sum(times) / len(times):.0f} s left"
    return f"step {step}/{max_steps}"


class LiveChart:
    """A FigureWidget redrawn from a background run's metrics.jsonl, with a Stop button.

    Stopping writes <run_dir>/STOP: the trainer finishes its step, checkpoints and exits cleanly.
    `watch()` blocks the cell until the run ends (interrupt the kernel to stop the run);
    `start()` redraws from a thread so the cell returns and the Stop button stays live in JupyterLab."""

    def __init__(self, run, panels: list[tuple[str, str, str | None]] = RLP_PANELS[:6], every: float = 2.0) -> None:
        import ipywidgets as widgets

        self.run = run
        self.panels = panels
        self.every = every
        # two columns, not three: the widget can be as narrow as ~600 px in JupyterLab, where three panels' titles overlap
        self.cols = 2
        self.figure = go.FigureWidget(training_curves({"live": []}, panels, cols=self.cols, drop_empty=False))
        self.figure.layout.autosize = True
        self.status = widgets.HTML("starting…")
        self.button = widgets.Button(description="Stop after this step", button_style="danger", icon="stop")
        self.button.on_click(lambda _: self.stop())
        self.widget = widgets.VBox([widgets.HBox([self.button, self.status]), self.figure])
        self._thread = None
        self._shown: tuple[int, bool] | None = None  # (rows, running) the chart last drew
        self._band = False  # the reward-hacking band, once drawn

    def stop(self) -> None:
        (Path(self.run.run_dir) / "STOP").touch()
        self.status.value = "stop requested: finishing the current step…"

    def refresh(self) -> int:
        rows = self.run.metrics()
        running = self.run.running()
        if (len(rows), running) == self._shown:  # nothing new: leave the CPU to the training process
            return len(rows)
        self._shown = (len(rows), running)
        fresh = training_curves({"live": rows}, self.panels, cols=self.cols, drop_empty=False)
        with self.figure.batch_update():
            for old, new in zip(self.figure.data, fresh.data):
                old.x, old.y = new.x, new.y
        if not self._band:
            self._band = hacking_band(self.figure, rows)
        state = "running" if running else f"finished (exit code {self.run.process.poll()})"
        if not running:  # nothing left to stop
            self.button.disabled = True
            self.button.description = "Run ended"
            self.button.button_style = ""
        self.status.value = f"{progress_text(rows, getattr(self.run, 'max_steps', 0), running)} &nbsp; {state} &nbsp; <code>{self.run.run_dir}</code>"
        return len(rows)

    def watch(self, timeout: float | None = None) -> list[dict[str, Any]]:
        from IPython.display import display

        display(self.widget)
        start = time.time()
        try:
            while self.run.running() and (timeout is None or time.time() - start < timeout):
                self.refresh()
                time.sleep(self.every)
        except KeyboardInterrupt:  # the kernel's stop button: stop the run gracefully, keep its checkpoint
            self.stop()
            self.run.process.wait()
        self.refresh()
        return self.run.metrics()

    def start(self) -> None:
        import threading

        from IPython.display import display

        display(self.widget)

        def loop() -> None:
            while self.run.running():
                self.refresh()
                time.sleep(self.every)
            self.refresh()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()


def arms_figure(
    experiments: dict[str, dict[str, list[Path]]],
    metric: str = "eval_answer_accuracy_thinking",
    title: str = "answer right after the model's own thought, at the last evaluation (± SE)",
) -> go.Figure:
    """Seeds of several arms (RLP, its null control, NTP, ...) in one or more experiments, side by side: each run's
    last evaluation of `metric` with its standard error, and the shared start (the first run's first evaluation)
    dashed. `experiments`: {experiment label: run_compare.arms_of(folder)}."""
    from workbench.run_compare import ARM_LABELS

    # one colour per arm, the same in every panel
    colour = {
        "rlp": COLORS[0],
        "rlptoken": COLORS[4],
        "control": COLORS[1],
        "controltoken": COLORS[3],
        "ntp": COLORS[2],
    }
    shown: set[str] = set()
    fig = make_subplots(rows=1, cols=len(experiments), subplot_titles=list(experiments))
    for col, groups in enumerate(experiments.values(), start=1):
        start = None
        for i, (arm, runs) in enumerate(groups.items()):
            values, errors, names = [], [], []
            for run in runs:
                evals = [r for r in read_metrics(run) if metric in r]
                if start is None:  # the experiment's first run, at its first evaluation
                    start = evals[0][metric]
                values.append(evals[-1][metric])
                errors.append(evals[-1].get(f"{metric}_se", 0.0))
                names.append(f"{run.name}: {evals[-1][metric]:.2f} ± {errors[-1]:.2f} at step {evals[-1]['step']}")
            x = [i + 0.12 * (k - (len(runs) - 1) / 2) for k in range(len(runs))]
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=values,
                    mode="markers",
                    name=ARM_LABELS.get(arm, arm),
                    legendgroup=arm,
                    showlegend=arm not in shown,
                    marker={"size": 10, "color": colour.get(arm, COLORS[i % len(COLORS)])},
                    error_y={"type": "data", "array": errors, "visible": True},
                    text=names,
                    hoverinfo="text",
                ),
                row=1,
                col=col,
            )
            shown.add(arm)
        fig.add_hline(
            y=start,
            line_dash="dash",
            line_color="grey",
            row=1,
            col=col,
            annotation_text=f"start {start:.2f}",
            annotation_position="top left",
        )
        fig.update_xaxes(
            tickvals=list(range(len(groups))), ticktext=[ARM_LABELS.get(a, a) for a in groups], row=1, col=col
        )
        fig.update_yaxes(range=[0, 1] if metric.startswith("eval_answer_accuracy") else None, row=1, col=col)
    fig.update_layout(title=title, height=380, margin={"t": 80})
    return fig


def budget_figure(
    table, title: str = "RLP by thought budget: this workbench beside the paper's Table S.1"
) -> go.Figure:
    """The thought-budget ablation in two panels: left, `run_compare.budget_table` (the answer right after the model's
    own thought before RLP and after it, ± SE, per budget; one marker per seed, side by side); right, the paper's
    Table S.1 (Qwen3-1.7B-Base: the overall benchmark average after RLP by budget, the base model dashed; the budgets
    evenly spaced)."""
    from workbench.run_compare import PAPER_BASE_AVERAGE, PAPER_BUDGET_ABLATION

    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[
            "here: answer right after own thought (± SE)",
            "paper, Table S.1: benchmark average",
        ],
        horizontal_spacing=0.1,
    )
    for column, label, color, symbol in (
        ("start", "before RLP (the warm start at that budget)", "grey", "circle-open"),
        ("end", "after RLP", COLORS[4], "circle"),
    ):
        fig.add_trace(
            go.Scatter(
                x=table["budget"] + 4 * (table["seed"] - table["seed"].mean()),  # seeds side by side
                y=table[column],
                mode="markers",
                name=label,
                marker={"size": 10, "color": color, "symbol": symbol},
                error_y={"type": "data", "array": table[f"{column}_se"], "visible": True},
                text=[
                    f"budget {b}, seed {s}: {v:.2f}"
                    + (f", change {c:+.2f} ± {e:.2f} paired" if column == "end" else "")
                    for b, s, v, c, e in zip(
                        table["budget"], table["seed"], table[column], table["change"], table["change_se"]
                    )
                ],
                hoverinfo="text",
            ),
            row=1,
            col=1,
        )
    budgets = sorted(PAPER_BUDGET_ABLATION)
    at = list(range(len(budgets)))  # evenly spaced: the paper's budgets double at every step
    fig.add_trace(
        go.Scatter(
            x=at,
            y=[PAPER_BUDGET_ABLATION[b] for b in budgets],
            mode="lines+markers",
            name="paper: after RLP",
            marker={"color": COLORS[0]},
            line={"color": COLORS[0]},
        ),
        row=1,
        col=2,
    )
    fig.add_trace(
        go.Scatter(
            x=[at[0], at[-1]],
            y=[PAPER_BASE_AVERAGE] * 2,
            mode="lines",
            name=f"paper: base model ({PAPER_BASE_AVERAGE})",
            line={"color": "grey", "dash": "dash"},
        ),
        row=1,
        col=2,
    )
    ours = sorted(set(table["budget"]))
    fig.update_xaxes(tickvals=ours, ticktext=[str(b) for b in ours], title_text="thought budget (tokens)", row=1, col=1)
    fig.update_xaxes(
        tickvals=at, ticktext=[str(b) for b in budgets], title_text="thought budget (tokens)", row=1, col=2
    )
    fig.update_yaxes(range=[0, 1], row=1, col=1)
    fig.update_layout(title=title, height=420, margin={"t": 80}, legend={"orientation": "h", "y": -0.3})
    return fig


def reward_map_film(
    frames: list[dict[str, Any]],
    value: str = "reward_mean",
    width: int = 16,
    title: str = "held-out reward map over training",
) -> go.Figure:
    """The reward map of one held-out document at every evaluation step (`evaluation.read_film(run_dir)`), as a plotly
    slider: the document's tokens laid out in rows of `width`, each scored token coloured by the mean `value`
    (reward_mean or content_gain_mean) of the thoughts sampled before it at that step; blue helps, red hurts.
    Works offline in an exported HTML report (the frames are in the figure)."""
    if not frames:
        raise ValueError("no film frames: the run wrote none (it needs eval_data and eval_G > 0)")
    tokens = frames[0]["tokens"]
    rows = -(-len(tokens) // width)

    def grid(frame: dict[str, Any]) -> tuple[list[list[float | None]], list[list[str]]]:
        z = [[None] * width for _ in range(rows)]
        hover = [[""] * width for _ in range(rows)]
        for p in frame["positions"]:
            r, c = divmod(p["position"], width)
            z[r][c] = p.get(value)
            hover[r][c] = (
                f"{value} {p.get(value) if p.get(value) is None else round(p[value], 2)}<br>best: {p['best_thought'][:60]}"
            )
        return z, hover

    text = [
        [tokens[r * width + c].replace("\n", "⏎") if r * width + c < len(tokens) else "" for c in range(width)]
        for r in range(rows)
    ]
    scale = max((abs(p[value]) for f in frames for p in f["positions"] if p.get(value) is not None), default=1.0) or 1.0

    def heat(frame: dict[str, Any]) -> go.Heatmap:
        z, hover = grid(frame)
        return go.Heatmap(
            z=z,
            text=text,
            customdata=hover,
            texttemplate="%{text}",
            colorscale="RdBu",
            zmid=0,
            zmin=-scale,
            zmax=scale,
            hovertemplate="%{text}<br>%{customdata}<extra></extra>",
            colorbar={"title": value.replace("_", " ")},
            xgap=1,
            ygap=1,
        )

    fig = go.Figure(data=[heat(frames[0])], frames=[go.Frame(data=[heat(f)], name=str(f["step"])) for f in frames])
    fig.update_layout(
        title=f"{title} ({frames[0]['model']})",
        height=60 + 34 * rows,
        margin={"t": 50, "b": 80},
        yaxis={"autorange": "reversed", "showticklabels": False},
        xaxis={"showticklabels": False},
        sliders=[
            {
                "active": 0,
                "currentvalue": {"prefix": "step "},
                "pad": {"t": 30},
                "steps": [
                    {
                        "label": str(f["step"]),
                        "method": "animate",
                        "args": [[str(f["step"])], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}],
                    }
                    for f in frames
                ],
            }
        ],
        updatemenus=[
            {
                "type": "buttons",
                "showactive": False,
                "x": 0,
                "y": -0.05,
                "xanchor": "left",
                "buttons": [
                    {
                        "label": "play",
                        "method": "animate",
                        "args": [None, {"frame": {"duration": 700, "redraw": True}, "fromcurrent": True}],
                    }
                ],
            }
        ],
    )
    return fig
