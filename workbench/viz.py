"""Seeing rewards: a per-token heat map (plain HTML), plotly charts, and an ipywidgets explorer.

The heat map is HTML with inline styles and `title` tooltips only - no JavaScript - so it renders in
an untrusted notebook in JupyterLab and in an exported HTML file alike.
"""

from __future__ import annotations

import html
import math
import re

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from workbench.probes import ProbeMap, headroom
from workbench.rewards import RewardMap


def setup_notebook() -> None:
    """Plotly output that works live in JupyterLab *and* in the offline HTML export of a papermill run.

    'plotly_mimetype' renders in JupyterLab; 'notebook' adds an HTML copy with plotly.js inlined once,
    which nbconvert's HTML export shows without a kernel or network.
    """
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook"
    # the corpus is full of prices: without this, JupyterLab typesets "$134 ... $96" in a DataFrame as LaTeX
    # (pandas then marks its tables with the classes MathJax 2 and 3 skip)
    pd.set_option("display.html.use_mathjax", False)


# MathJax (JupyterLab 4: MathJax 3, class mathjax_ignore; nbconvert's HTML: MathJax 2, class tex2jax_ignore)
# typesets text between two "$" in HTML outputs; document and thought text must never be read as maths.
NO_MATH_CLASS = "mathjax_ignore tex2jax_ignore"


def no_math(markup: str) -> str:
    """`markup` inside an element MathJax skips, so "$" in document or thought text stays a dollar sign."""
    return f'<div class="{NO_MATH_CLASS}">{markup}</div>'


def show_html(markup: str) -> None:
    from IPython.display import HTML, display

    display(HTML(no_math(markup)))


# --------------------------------------------------------------------------- colours


def _diverging_rgb(value: float, max_abs: float) -> tuple[int, int, int] | None:
    """The heat-map colour of `value` as (r, g, b); None where there is none (NaN, no scale)."""
    if value is None or not math.isfinite(value) or max_abs <= 0:
        return None
    x = max(-1.0, min(1.0, value / max_abs))
    end = (33, 102, 172) if x >= 0 else (178, 24, 43)  # white -> blue, white -> red
    r, g, b = (255 + (c - 255) * abs(x) for c in end)
    return int(r), int(g), int(b)


def diverging_color(value: float, max_abs: float) -> str:
    """Red for negative, white at 0, blue for positive; `max_abs` maps to full saturation."""
    rgb = _diverging_rgb(value, max_abs)
    return "transparent" if rgb is None else f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"


def relative_luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0-255 channels)."""

    def lin(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: float, b: float) -> float:
    """WCAG 2 contrast ratio of two relative luminances (1 to 21; 4.5 is the bar for small text)."""
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


def _text_color(value: float, max_abs: float) -> str:
    """Black or white, whichever reads better on the cell's colour (at least 4.58:1 on every colour of the scale)."""
    rgb = _diverging_rgb(value, max_abs)
    if rgb is None:
        return "black"
    lum = relative_luminance(rgb)
    return "white" if contrast_ratio(lum, 1.0) > contrast_ratio(lum, 0.0) else "black"


def _reward_cell(value: float, max_abs: float, digits: int = 3) -> str:
    """A table cell holding a reward, coloured like the heat map."""
    return (
        f"<td style='background:{diverging_color(value, max_abs)};color:{_text_color(value, max_abs)}'>"
        f"{value:+.{digits}f}</td>"
    )


CELL_PADDING = "padding:2px 8px;"


def padded(table_html: str) -> str:
    """Every <td>/<th> with inline padding: JupyterLab gives table cells inside widgets none, so columns ran together
    (seen in headless Chromium); inline styles survive every renderer and the exported HTML."""
    with_style = re.sub(r"<(td|th)\b([^>]*?)style='", lambda m: f"<{m[1]}{m[2]}style='{CELL_PADDING}", table_html)
    return re.sub(r"<(td|th)\b((?:(?!style=)[^>])*)>", lambda m: f"<{m[1]}{m[2]} style='{CELL_PADDING}'>", with_style)


def _visible(token: str) -> str:
    """Token text with whitespace made visible enough to hover, then HTML-escaped."""
    shown = token.replace("\n", "\u21b5\n").replace("\t", "\u2192\t")
    return html.escape(shown).replace("\n", "<br>")


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


# --------------------------------------------------------------------------- heat map


LAYERS = {
    "reward": "mean reward",
    "content_gain": "mean content gain (reward - empty-thought reward)",
    "headroom": "headroom (best probe - best sampled reward)",
}


def token_heatmap(
    rm: RewardMap,
    max_abs: float | None = None,
    title: str | None = None,
    rewards: np.ndarray | None = None,
    unit: str = "nats",
    layer: str = "reward",
    probes: ProbeMap | None = None,
) -> str:
    """The document, each scored token coloured by one layer (HTML string):

    - "reward": the mean reward over the position's thoughts (`rewards`, one per thought, shows another design);
    - "content_gain": the mean of reward - the empty thought's reward there: what the thoughts' words added once
      the format cost of the markers is taken out (needs the map's empty-thought reference);
    - "headroom": the best probe's reward - the best sampled thought's (needs `probes` at the same positions).

    Hover a token for its reward, content gain, empty-thought reward, no-think surprisal and entropy, its best and
    worst thought and, with `probes`, the best probe. Unscored tokens are grey.
    """
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {', '.join(LAYERS)}, got {layer!r}")
    if rewards is not None and layer != "reward":
        raise ValueError(f"the {layer} layer is defined for the information gain only; drop `rewards` to show it")
    per = rm.per_position(rewards).set_index("position")
    room = None
    if probes is not None and rewards is None:
        room = headroom(rm, probes).set_index("position")
    elif layer == "headroom":
        raise ValueError("the headroom layer needs the probes scored at the map's positions (probes=...)")
    column = {"reward": "reward_mean", "content_gain": "content_gain_mean"}.get(layer)
    values = per[column] if column else room["headroom"]
    values = values.dropna()
    if max_abs is None:
        magnitudes = values.abs().to_numpy()
        max_abs = float(np.percentile(magnitudes, 95)) if magnitudes.size else 1.0
        max_abs = max(max_abs, 1e-6)
    spans = []
    for t, token in enumerate(rm.tokens):
        if t in values.index:
            row = per.loc[t]
            v = float(values.loc[t])
            lines = [
                f"t={t} target {token!r}",
                f"mean reward {row['reward_mean']:+.3f} {unit} over {int(row['thoughts'])} thoughts "
                f"(best {row['reward_max']:+.3f}, worst {row['reward_min']:+.3f})",
            ]
            if rewards is None and math.isfinite(row["empty_thought_reward"]):
                lines.append(
                    f"empty thought {row['empty_thought_reward']:+.3f} nats (format cost); "
                    f"mean content gain {row['content_gain_mean']:+.3f}"
                )
            if room is not None and t in room.index:
                r = room.loc[t]
                lines.append(f"best probe ({r['best_family']}) {r['best_probe']:+.3f}; headroom {r['headroom']:+.3f}")
            lines += [
                f"no-think surprisal {-row['logp_no_think']:.3f} nats, entropy {row['entropy_no_think']:.3f} nats",
                f"best thought: {_shorten(row['best_thought'])}",
                f"worst thought: {_shorten(row['worst_thought'])}",
            ]
            tip = "\n".join(lines)
            style = (
                f"background:{diverging_color(v, max_abs)};color:{_text_color(v, max_abs)};"
                "border:1px solid #888;border-radius:3px;padding:0 1px;"
            )
            spans.append(f'<span title="{html.escape(tip, quote=True)}" style="{style}">{_visible(token)}</span>')
        else:
            spans.append(f'<span style="color:#999">{_visible(token)}</span>')
    legend = "".join(
        f'<span style="background:{diverging_color(v, max_abs)};color:{_text_color(v, max_abs)};padding:0 6px;'
        f'font-size:11px">{v:+.1f}</span>'
        for v in np.linspace(-max_abs, max_abs, 7)
    )
    header = f"<div style='font-weight:bold;margin-bottom:4px'>{html.escape(title)}</div>" if title else ""
    return (
        f"<div class='{NO_MATH_CLASS}' style='font-family:monospace;font-size:13px;line-height:1.9;white-space:pre-wrap;"
        "border:1px solid #ddd;padding:8px;max-width:100%'>"
        f"{header}{''.join(spans)}"
        f"<div style='margin-top:8px;font-family:sans-serif;font-size:11px;color:#444'>{LAYERS[layer]} ({unit}): {legend}"
        f" &nbsp; model {html.escape(rm.model)}, teacher {html.escape(rm.teacher)}; grey = not scored; "
        "hover a token for details</div></div>"
    )


def thoughts_table(rm: RewardMap, position: int) -> str:
    """The G thoughts at one position, ranked by reward (HTML)."""
    df = rm.to_dataframe()
    df = df[df["position"] == position].sort_values("reward", ascending=False)
    if df.empty:
        return f"<p>position {position} was not scored</p>"
    t = int(position)
    context = "".join(rm.tokens[max(0, t - 30) : t])
    head = (
        f"<p style='font-family:sans-serif'><b>t = {t}</b>, target <code>{html.escape(repr(rm.tokens[t]))}</code>, "
        f"no-think log p = {df['logp_no_think'].iloc[0]:+.3f}, entropy {df['entropy_no_think'].iloc[0]:.3f}<br>"
        f"<small>context ends: <code>\u2026{html.escape(context[-120:])}</code></small></p>"
    )
    max_abs = max(float(df["reward"].abs().max()), 1e-6)
    rows = "".join(
        f"<tr>{_reward_cell(r.reward, max_abs)}<td>{r.logp_with_thought:+.3f}</td><td>{r.thought_tokens}</td>"
        f"<td>{html.escape(r.closed_by)}</td><td style='text-align:left'>{_visible(r.thought)}</td></tr>"
        for r in df.itertuples()
    )
    return no_math(
        head
        + padded(
            "<table style='font-size:12px;border-collapse:collapse'>"
            "<tr><th>reward</th><th>log p with thought</th><th>tokens</th><th>closed by</th><th>thought</th></tr>"
            f"{rows}</table>"
        )
    )


# --------------------------------------------------------------------------- charts


def reward_vs_surprisal(rm: RewardMap) -> go.Figure:
    df = rm.to_dataframe()
    df["no_think_surprisal"] = -df["logp_no_think"]
    fig = px.scatter(
        df,
        x="no_think_surprisal",
        y="reward",
        color="thought_tokens",
        hover_data=["position", "target", "thought"],
        labels={"no_think_surprisal": "no-think surprisal of x_t (nats)", "reward": "reward (nats)"},
        title="Reward vs how surprising the target was without a thought",
    )
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    return fig


def reward_vs_length(rm: RewardMap) -> go.Figure:
    df = rm.to_dataframe()
    fig = px.box(
        df,
        x="thought_tokens",
        y="reward",
        points="all",
        hover_data=["position", "target", "thought"],
        labels={"thought_tokens": "thought length (tokens)", "reward": "reward (nats)"},
        title="Reward vs thought length",
    )
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    return fig


def reward_histogram(rm: RewardMap) -> go.Figure:
    df = rm.to_dataframe()
    fig = px.histogram(df, x="reward", nbins=40, color="closed_by", title="Distribution of rewards")
    fig.add_vline(x=0, line_dash="dot", line_color="grey")
    return fig


def reward_along_document(rm: RewardMap) -> go.Figure:
    per = rm.per_position()
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=per["position"],
            y=per["reward_mean"],
            mode="lines+markers",
            name="mean reward",
            error_y=dict(
                type="data",
                symmetric=False,
                array=per["reward_max"] - per["reward_mean"],
                arrayminus=per["reward_mean"] - per["reward_min"],
            ),
            text=per["target"],
        )
    )
    fig.add_trace(go.Scatter(x=per["position"], y=-per["logp_no_think"], mode="lines", name="no-think surprisal"))
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(title="Reward (min-mean-max over thoughts) along the document", xaxis_title="position t")
    return fig


def summary_bars(frame: pd.DataFrame, x: str, columns: list[str], title: str) -> go.Figure:
    """One bar chart per column of a small sweep table, side by side."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(columns), subplot_titles=columns)
    for i, col in enumerate(columns, start=1):
        fig.add_trace(go.Bar(x=frame[x].astype(str), y=frame[col], name=col, showlegend=False), row=1, col=i)
        fig.update_xaxes(title_text=x, row=1, col=i)
    fig.update_layout(title=title, height=350)
    return fig


def correlation_heatmap(matrix: pd.DataFrame, title: str = "Spearman correlation between designs") -> go.Figure:
    fig = px.imshow(matrix.astype(float), text_auto=".2f", color_continuous_scale="RdBu", zmin=-1, zmax=1, title=title)
    fig.update_layout(height=420)
    return fig


def probe_families_chart(probes: ProbeMap, sampled: RewardMap | None = None) -> go.Figure:
    """Per probe family (and the sampled thoughts): mean reward and mean content gain, side by side."""
    summary = probes.summary()
    names = list(summary.index)
    reward, gain = list(summary["reward_mean"]), list(summary["content_gain_mean"])
    if sampled is not None:
        s = sampled.summary()
        names.append("sampled")
        reward.append(s["reward_mean"])
        gain.append(s["content_gain_mean"])
    fig = go.Figure(
        [
            go.Bar(x=names, y=reward, name="mean reward (format cost included)"),
            go.Bar(x=names, y=gain, name="mean content gain (reward - empty thought)"),
        ]
    )
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(barmode="group", title="What each kind of thought earns", yaxis_title="nats", height=380)
    return fig


def format_cost_along_document(rm: RewardMap, probes: ProbeMap | None = None) -> go.Figure:
    """Per position: the empty thought's reward (the format cost), the best and mean sampled reward and, with
    probes, the leak probe and the best probe; the gap from best sampled to best probe is the headroom."""
    per = rm.per_position()
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=per["position"],
            y=per["empty_thought_reward"],
            mode="lines+markers",
            name="empty thought (format cost)",
            text=per["target"],
        )
    )
    fig.add_trace(
        go.Scatter(x=per["position"], y=per["reward_mean"], mode="lines", name="sampled, mean", text=per["target"])
    )
    fig.add_trace(
        go.Scatter(x=per["position"], y=per["reward_max"], mode="lines", name="sampled, best", text=per["target"])
    )
    if probes is not None:
        table = probes.table()
        if "leak" in table:
            fig.add_trace(go.Scatter(x=table.index, y=table["leak"], mode="markers", name="leak probe"))
        fig.add_trace(
            go.Scatter(
                x=table.index,
                y=table.max(axis=1),
                mode="markers",
                name="best probe",
                marker={"symbol": "star", "size": 9},
            )
        )
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(
        title="Format cost, sampled thoughts and probes along the document",
        xaxis_title="position t",
        yaxis_title="reward (nats)",
        height=400,
    )
    return fig


def sanity_chart(table: pd.DataFrame) -> go.Figure:
    """The design sanity table as grouped bars: per design, the share of positions passing each check."""
    checks = ["leak>echo>neutral", "leak>wrong_hint", "empty>informative", "degenerate_group_share"]
    checks = [c for c in checks if c in table]
    fig = go.Figure([go.Bar(x=list(table.index), y=table[c].astype(float), name=c) for c in checks])
    fig.update_layout(
        barmode="group", title="Design sanity on probe thoughts (share of positions)", yaxis_range=[0, 1], height=380
    )
    return fig


def probe_table(probes: ProbeMap, position: int, extra: pd.DataFrame | None = None) -> str:
    """The probes at one position as HTML (context, target, each family's thought, reward and content gain);
    `extra` rows (same columns plus "family") are appended, e.g. thoughts typed in the editor."""
    rm = probes.reward_map
    df = probes.example(position)
    if extra is not None and len(extra):
        df = pd.concat([df, extra[df.columns]], ignore_index=True)
    if df.empty:
        return f"<p>position {position} was not probed</p>"
    t = int(position)
    context = "".join(rm.tokens[max(0, t - 30) : t])
    max_abs = max(float(df["reward"].abs().max()), 1e-6)
    rows = "".join(
        f"<tr><td>{html.escape(str(r.family))}</td><td style='text-align:left'>{_visible(r.thought) or '<i>(empty)</i>'}</td>"
        f"{_reward_cell(r.reward, max_abs, 2)}<td>{r.content_gain:+.2f}</td></tr>"
        for r in df.itertuples()
    )
    return (
        f"<p style='font-family:sans-serif;margin-bottom:2px'><b>t = {t}</b>, target <code>{html.escape(repr(rm.tokens[t]))}</code>"
        f", no-think log p {rm.no_think.logp[t]:+.2f}; context ends <code>\u2026{html.escape(context[-80:])}</code></p>"
        + padded(
            "<table style='font-size:12px;border-collapse:collapse;margin-bottom:10px'>"
            "<tr><th>family</th><th>thought</th><th>reward</th><th>content gain</th></tr>"
            f"{rows}</table>"
        )
    )


# --------------------------------------------------------------------------- explorer


def explorer(rm: RewardMap):
    """An ipywidgets explorer: pick a position, see its G thoughts ranked by reward."""
    import ipywidgets as widgets

    per = rm.per_position()
    options = [
        (f"t={int(r.position)} {r.target!r} mean {r.reward_mean:+.2f}", int(r.position)) for r in per.itertuples()
    ]
    pick = widgets.Dropdown(options=options, description="position")
    out = widgets.HTML(value=thoughts_table(rm, options[0][1]) if options else "")

    def update(change) -> None:
        out.value = thoughts_table(rm, change["new"])

    pick.observe(update, names="value")
    return widgets.VBox([pick, out])
