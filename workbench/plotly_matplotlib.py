"""The offline route of `figure_files`: redraw a plotly figure's JSON with matplotlib (Agg: no browser, no display).

It covers the trace types the workbench's charts use - scatter (lines, markers, text, error bars, fills, continuous
marker colours), bar (group/stack/overlay, vertical and horizontal), heatmap (colour scales, colour axes, cell text),
histogram and box - on make_subplots layouts, with titles, axis titles, legends, colour bars, subplot titles and other
annotations, and the lines/rectangles that add_hline/add_vline/add_vrect leave in layout.shapes. Other trace types
are skipped with one warning line naming them; a figure never fails because of one trace.

This module imports nothing from the rest of `workbench`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# plotly's default colourway (plotly template); used when a figure carries no template of its own
COLORWAY = [
    "#636efa",
    "#EF553B",
    "#00cc96",
    "#ab63fa",
    "#FFA15A",
    "#19d3f3",
    "#FF6692",
    "#B6E880",
    "#FF97FF",
    "#FECB52",
]
DASHES = {"dash": "--", "dot": ":", "dashdot": "-.", "longdash": (0, (8, 3)), "longdashdot": (0, (8, 3, 2, 3))}
SYMBOLS = {
    "circle": "o",
    "square": "s",
    "diamond": "D",
    "cross": "P",
    "x": "X",
    "star": "*",
    "triangle-up": "^",
    "triangle-down": "v",
    "triangle-left": "<",
    "triangle-right": ">",
    "pentagon": "p",
    "hexagon": "h",
}
DPI = 100  # layout pixels -> inches; PNGs are written at 1.5x for a sharper picture


def render_matplotlib(fig: Any) -> Any:
    """A matplotlib Figure drawn from a plotly figure (go.Figure, its dict, or its JSON string)."""
    from matplotlib.figure import Figure

    spec = _spec(fig)
    lay, traces = spec.get("layout", {}), [t for t in spec.get("data", []) if t.get("visible", True) is True]
    width, height = float(lay.get("width") or 1000), float(lay.get("height") or 450)
    # by id: traces hold numpy arrays, so `in` on a list of them would compare arrays
    legend_ids = {id(t) for t in traces if _shows_legend(t, lay, traces)}
    scaled = any(_scale_owner(t, lay) is not None for t in traces)
    margin = lay.get("margin") or {}
    # plotly's margins, but never so tight that matplotlib's tick labels fall off the canvas
    ml, mb = max(margin.get("l", 80), 60), max(margin.get("b", 80), 50)
    mt = min(max(margin.get("t", 100), 60 if plain_text(_text(lay.get("title"))) else 30), 80)
    mr = max(margin.get("r", 80), 30) + (70 if scaled else 0) + (190 if legend_ids else 0)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    sx, sy = (width - ml - mr) / width, (height - mt - mb) / height

    def paper(x: float, y: float) -> tuple[float, float]:  # plotly paper coordinates -> figure fraction
        return ml / width + x * sx, mb / height + y * sy

    from matplotlib.transforms import Affine2D

    paper_transform = Affine2D().scale(sx, sy).translate(ml / width, mb / height) + figure.transFigure

    # one matplotlib Axes per (x axis, y axis) pair that a trace uses, or that make_subplots laid out
    pairs = list(dict.fromkeys((t.get("xaxis", "x"), t.get("yaxis", "y")) for t in traces))
    for key, ax_lay in sorted(lay.items()):
        anchor = str(ax_lay.get("anchor")) if isinstance(ax_lay, dict) else ""
        if re.fullmatch(r"xaxis\d*", key) and re.fullmatch(r"y\d*", anchor):
            pair = ("x" + key[5:], ax_lay["anchor"])
            if pair not in pairs:
                pairs.append(pair)
    axes = {}
    for xa, ya in pairs or [("x", "y")]:
        (x0, x1), (y0, y1) = _axis(lay, xa).get("domain", [0, 1]), _axis(lay, ya).get("domain", [0, 1])
        (fx0, fy0), (fx1, fy1) = paper(x0, y0), paper(x1, y1)
        ax = figure.add_axes((fx0, fy0, fx1 - fx0, fy1 - fy0))
        ax.set_facecolor("#f5f6fa")
        ax.grid(True, color="white", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ax.spines.values():
            side.set_visible(False)
        ax.tick_params(labelsize=8, length=0)
        axes[(xa, ya)] = ax
    for (xa, ya), ax in axes.items():  # facets: 'matches' shares a range, and hidden tick labels rely on that
        for which, name in (("x", xa), ("y", ya)):
            target = _axis(lay, name).get("matches")
            other = next((a for (ox, oy), a in axes.items() if (ox if which == "x" else oy) == target), None)
            if other is not None and other is not ax:
                try:
                    getattr(ax, f"share{which}")(other)
                except ValueError:  # already shared: nothing to do
                    pass
    cats: dict[tuple[Any, str], list[str]] = {}  # category labels per (axes, 'x'/'y'), in order of appearance
    colorway = lay.get("colorway") or lay.get("template", {}).get("layout", {}).get("colorway") or COLORWAY
    skipped: set[str] = set()
    handles = []
    bar_slots = _bar_slots(traces, lay)
    scale_done: set[str] = set()
    for i, t in enumerate(traces):
        kind, ax = t.get("type", "scatter"), axes[(t.get("xaxis", "x"), t.get("yaxis", "y"))]
        color = (
            _color(
                t.get("marker", {}).get("color")
                if isinstance(t.get("marker", {}).get("color"), str)
                else t.get("line", {}).get("color")
            )
            or colorway[i % len(colorway)]
        )
        draw = {
            "scatter": _scatter,
            "scattergl": _scatter,
            "bar": _bar,
            "heatmap": _heatmap,
            "histogram": _histogram,
            "box": _box,
        }.get(kind)
        if draw is None:
            skipped.add(kind)
            continue
        mappable = draw(
            ax,
            t,
            color,
            lambda v, a, ax=ax: _coords(v, cats.setdefault((ax, a), [])),
            lay=lay,
            slot=bar_slots.get(i),
            traces=traces,
        )
        owner = _scale_owner(t, lay)
        if mappable is not None and owner is not None and owner not in scale_done:
            scale_done.add(owner)  # one colour bar per colour axis, beside the axes that first used it
            box = ax.get_position()
            cax = figure.add_axes((box.x1 + 12 / width, box.y0, 14 / width, box.height))
            bar = figure.colorbar(mappable, cax=cax)
            bar.ax.tick_params(labelsize=7)
            bar.set_label(plain_text(_text(_scale_spec(t, lay).get("colorbar", {}).get("title"))), fontsize=8)
        if id(t) in legend_ids:
            from matplotlib.patches import Patch

            handles.append(
                Patch(color=color, label=plain_text(t.get("name", ""))) if kind != "scatter" else _line_handle(t, color)
            )
    for (ax, which), labels in cats.items():
        if labels:
            slanted = which == "x" and len(labels) > 6  # many category names under a chart: slant them
            getattr(ax, f"set_{which}ticks")(
                range(len(labels)),
                [plain_text(str(c))[:24] for c in labels],
                rotation=45 if slanted else 0,
                ha="center" if which == "x" and not slanted else "right",
            )
    for (xa, ya), ax in axes.items():
        for which, name in (("x", xa), ("y", ya)):
            spec_axis = _axis(lay, name)
            getattr(ax, f"set_{which}label")(plain_text(_text(spec_axis.get("title"))), fontsize=9)
            if spec_axis.get("type") == "log":
                getattr(ax, f"set_{which}scale")("log")
            if spec_axis.get("range") and spec_axis.get("autorange") is not True:
                lo, hi = spec_axis["range"]
                if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
                    getattr(ax, f"set_{which}lim")((10**lo, 10**hi) if spec_axis.get("type") == "log" else (lo, hi))
            if spec_axis.get("autorange") == "reversed":
                getattr(ax, f"invert_{which}axis")()
            if spec_axis.get("tickvals") is not None and spec_axis.get("ticktext") is not None:  # named positions
                getattr(ax, f"set_{which}ticks")(list(spec_axis["tickvals"]))
                getattr(ax, f"set_{which}ticklabels")([str(t) for t in spec_axis["ticktext"]], fontsize=8)
            if spec_axis.get("showticklabels") is False:
                getattr(ax, f"set_{which}ticklabels")([])
    for shape in lay.get("shapes", []) or []:
        _shape(figure, axes, shape, paper_transform)
    for note in lay.get("annotations", []) or []:
        _annotation(axes, note, paper_transform)
    title = plain_text(_text(lay.get("title")))
    if title:
        figure.text(ml / width, 1 - 12 / height, title, fontsize=12, va="top", ha="left")
    if handles:
        figure.legend(
            handles=handles,
            loc="upper left",
            fontsize=8,
            frameon=False,
            bbox_to_anchor=(1 - (190 - 10) / width, 1 - mt / height),
        )
    if skipped:
        log.warning(
            "figure %r: trace type(s) %s not drawn by the matplotlib route", title[:60], ", ".join(sorted(skipped))
        )
    return figure


def _scatter(ax, t, color, coords, lay, **_) -> Any:
    x, y = _xy(t, coords)
    n = len(x)
    mode = t.get("mode") or ("lines+markers" if n < 20 else "lines")
    line, marker = t.get("line", {}) or {}, t.get("marker", {}) or {}
    mappable = None
    if t.get("fill") in ("tozeroy", "tonexty", "toself"):  # simplified: every fill is drawn down to zero
        ax.fill_between(x, y, 0, color=_color(t.get("fillcolor")) or color, alpha=0.25, linewidth=0)
    if "lines" in mode:
        ax.plot(x, y, color=color, linestyle=DASHES.get(line.get("dash"), "-"), linewidth=line.get("width", 2) * 0.75)
    if "markers" in mode:
        size = (marker.get("size") if isinstance(marker.get("size"), (int, float)) else 6) * 0.75
        values = _arr(marker.get("color")) if not isinstance(marker.get("color"), (str, type(None))) else None
        if values is not None and values.dtype.kind in "fiu" and len(values) == n:
            scale = _scale_spec(t, lay)
            mappable = ax.scatter(
                x,
                y,
                c=values,
                cmap=_cmap(scale.get("colorscale"), scale.get("reversescale")),
                vmin=scale.get("cmin"),
                vmax=scale.get("cmax"),
                s=size**2,
                zorder=3,
            )
        else:
            ax.plot(
                x,
                y,
                linestyle="none",
                marker=SYMBOLS.get(str(marker.get("symbol")), "o"),
                markersize=size,
                color=color,
                alpha=marker["opacity"] if isinstance(marker.get("opacity"), (int, float)) else 1,
            )
    err = t.get("error_y") or {}
    if err.get("array") is not None and err.get("visible", True):
        up = _arr(err["array"]).astype(float)
        symmetric = err.get("symmetric", True) or err.get("arrayminus") is None
        down = up if symmetric else _arr(err["arrayminus"]).astype(float)
        ax.errorbar(x, y, yerr=[down, up], fmt="none", ecolor=color, elinewidth=0.8, capsize=2)
    if "text" in mode and t.get("text") is not None:
        for xi, yi, s in zip(x, y, _listify(t["text"], n)):
            ax.annotate(
                plain_text(str(s)),
                (xi, yi),
                fontsize=7,
                ha="center",
                va="bottom",
                xytext=(0, 3),
                textcoords="offset points",
            )
    return mappable


def _bar_slots(traces: list[dict], lay: dict) -> dict[int, tuple[int, int]]:
    """(slot, slots) for each bar trace: its place among the bars that share its axes in barmode 'group'."""
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(traces):
        if t.get("type") == "bar":
            groups.setdefault((t.get("xaxis", "x"), t.get("yaxis", "y")), []).append(i)
    grouped = lay.get("barmode", "group") == "group"
    return {i: (k if grouped else 0, len(idx) if grouped else 1) for idx in groups.values() for k, i in enumerate(idx)}


def _bar(ax, t, color, coords, lay, slot, traces, **_) -> None:
    horizontal = t.get("orientation") == "h"
    cat, val = (t.get("y"), t.get("x")) if horizontal else (t.get("x"), t.get("y"))
    val = _arr(val).astype(float)
    pos = coords(cat if cat is not None else np.arange(len(val)), "y" if horizontal else "x")
    step = float(np.min(np.diff(np.unique(pos)))) if len(np.unique(pos)) > 1 else 1.0
    k, n = slot or (0, 1)
    width = 0.8 * step / n
    pos = pos - 0.4 * step + width * (k + 0.5)
    stack = lay.get("barmode") in ("stack", "relative")
    base = _stack_base(ax, pos, val) if stack else None
    alpha = 0.6 if lay.get("barmode") == "overlay" else 1.0
    bars = (
        ax.barh(pos, val, height=width, left=base, color=color, alpha=alpha)
        if horizontal
        else ax.bar(pos, val, width=width, bottom=base, color=color, alpha=alpha)
    )
    text = t.get("text")
    if text is not None and not isinstance(text, str) and len(val) <= 60:
        ax.bar_label(bars, labels=[plain_text(str(s)) for s in _listify(text, len(val))], fontsize=7)


def _stack_base(ax, pos: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Where stacked bars start: the running positive (or negative) total at each position, kept on the axes."""
    totals = ax.__dict__.setdefault("_plotly_stack", {})
    base = np.array([totals.get((round(p, 6), v >= 0), 0.0) for p, v in zip(pos, val)])
    for p, v, b in zip(pos, val, base):
        totals[(round(p, 6), v >= 0)] = b + (v if np.isfinite(v) else 0.0)
    return base


def _histogram(ax, t, color, coords, lay, traces, **_) -> None:
    horizontal = t.get("x") is None and t.get("y") is not None
    values = _arr(t.get("y") if horizontal else t.get("x"))
    if values.dtype.kind not in "fiub":  # a histogram of categories: count per category, drawn as bars
        labels, counts = np.unique(values.astype(str), return_counts=True)
        pos = coords(labels, "y" if horizontal else "x")
        (ax.barh if horizontal else ax.bar)(pos, counts, 0.8, color=color, alpha=0.7)
        return
    same_axes = [
        _arr(o.get("y") if horizontal else o.get("x"))
        for o in traces
        if o.get("type") == "histogram"
        and (o.get("xaxis", "x"), o.get("yaxis", "y")) == (t.get("xaxis", "x"), t.get("yaxis", "y"))
    ]
    pooled = np.concatenate([v.astype(float) for v in same_axes if v.dtype.kind in "fiub"])
    pooled = pooled[np.isfinite(pooled)]
    nbins = t.get("nbinsy" if horizontal else "nbinsx") or "auto"
    edges = np.histogram_bin_edges(pooled, bins=nbins)  # shared bins, as plotly does for traces on one axis
    counts, _ = np.histogram(values.astype(float)[np.isfinite(values.astype(float))], bins=edges)
    stack = lay.get("barmode") in ("stack", "relative")
    mids, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    base = _stack_base(ax, mids, counts.astype(float)) if stack else None
    alpha = 1.0 if stack else 0.6
    if horizontal:
        ax.barh(mids, counts, height=widths, left=base, color=color, alpha=alpha, edgecolor="white", linewidth=0.3)
    else:
        ax.bar(mids, counts, width=widths, bottom=base, color=color, alpha=alpha, edgecolor="white", linewidth=0.3)


def _box(ax, t, color, coords, **_) -> None:
    horizontal = t.get("orientation") == "h"
    values = _arr(t.get("x") if horizontal else t.get("y")).astype(float)
    groups_raw = t.get("y") if horizontal else t.get("x")
    keys = _arr(groups_raw) if groups_raw is not None else np.array([t.get("name", "")] * len(values))
    order = list(dict.fromkeys(keys.tolist()))
    pos = coords(np.array(order), "y" if horizontal else "x")
    data = [values[(keys == k) & np.isfinite(values)] for k in order]
    ax.boxplot(
        data,
        positions=pos,
        widths=0.5,
        orientation="horizontal" if horizontal else "vertical",
        patch_artist=True,
        showfliers=False,
        manage_ticks=False,
        boxprops={"facecolor": color, "alpha": 0.35, "edgecolor": color},
        medianprops={"color": color},
        whiskerprops={"color": color},
        capprops={"color": color},
    )
    if t.get("boxpoints") == "all":  # px.box(points="all"): every point, jittered over its box
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(values))  # fixed seed: the same file every time
        where = np.array([order.index(k) for k in keys.tolist()])
        at = np.asarray(pos, dtype=float)[where] + jitter
        ax.plot(
            *((values, at) if horizontal else (at, values)),
            linestyle="none",
            marker="o",
            markersize=2.5,
            color=color,
            alpha=0.6,
        )


def _heatmap(ax, t, color, coords, lay, **_) -> Any:
    z = _arr(t.get("z")).astype(float)  # gaps (None) are nan: drawn as holes, as plotly does
    rows, cols = z.shape
    xs = coords(t["x"], "x") if t.get("x") is not None else np.arange(cols, dtype=float)
    ys = coords(t["y"], "y") if t.get("y") is not None else np.arange(rows, dtype=float)
    scale = _scale_spec(t, lay)
    lo, hi = scale.get("zmin", scale.get("cmin")), scale.get("zmax", scale.get("cmax"))
    if (lo is None or hi is None) and scale.get("zmid", scale.get("cmid")) is not None:
        mid = scale.get("zmid", scale.get("cmid"))
        reach = float(np.nanmax(np.abs(z - mid))) if np.isfinite(z).any() else 1.0
        lo, hi = mid - reach, mid + reach
    mesh = ax.pcolormesh(
        _edges(xs),
        _edges(ys),
        np.ma.masked_invalid(z),
        vmin=lo,
        vmax=hi,
        cmap=_cmap(scale.get("colorscale"), scale.get("reversescale")),
        edgecolors="white" if t.get("xgap") or t.get("ygap") else "face",
        linewidth=0.5,
    )
    ax.grid(False)
    template = t.get("texttemplate")
    if template:  # plotly writes cell text only through texttemplate
        text = t.get("text")
        text = _arr(text) if text is not None and not isinstance(text, str) else None
        box = ax.get_position()
        cell_w = box.width * ax.figure.get_figwidth() * DPI / cols
        cell_h = box.height * ax.figure.get_figheight() * DPI / rows
        labels = [
            [
                plain_text(
                    _fill_template(
                        template,
                        {
                            "z": z[r, c],
                            "x": xs[c],
                            "y": ys[r],
                            "text": text[r][c] if text is not None and text.ndim == 2 else "",
                        },
                    )
                )
                for c in range(cols)
            ]
            for r in range(rows)
        ]
        # one font size for the whole map (fitted to the cell and a typical label), so sizes do not read as values
        longest = sorted(len(s) for row in labels for s in row if s) or [1]
        typical = longest[int(0.9 * (len(longest) - 1))]
        size = max(4.0, min(9.0, 0.5 * cell_h, 1.2 * cell_w / max(2, typical)))
        for r in range(rows):
            for c in range(cols):
                if labels[r][c]:
                    ax.text(xs[c], ys[r], labels[r][c], ha="center", va="center", fontsize=size, clip_on=True)
    return mesh if t.get("showscale", True) is not False else None


# --------------------------------------------------------------------------- layout pieces


def _shape(figure, axes: dict, shape: dict, paper_transform) -> None:
    """Lines and rectangles; refs 'x', 'x2 domain' or 'paper' (what add_hline/add_vline/add_vrect produce)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle
    from matplotlib.transforms import blended_transform_factory

    kind = shape.get("type", "line")
    if kind not in ("line", "rect"):
        return
    trans = []
    for which, ref in (("x", shape.get("xref", "x")), ("y", shape.get("yref", "y"))):
        name = ref.split()[0]
        ax = next((a for (xa, ya), a in axes.items() if (xa if which == "x" else ya) == name), None)
        if ref == "paper" or ax is None:
            trans.append(paper_transform)
        else:
            trans.append(ax.transAxes if ref.endswith("domain") else ax.transData)
    transform = blended_transform_factory(*trans)
    line = shape.get("line", {}) or {}
    style = {
        "color": _color(line.get("color")) or "#444",
        "linestyle": DASHES.get(line.get("dash"), "-"),
        "linewidth": (line.get("width") or 2) * 0.75,
    }
    x0, x1, y0, y1 = (shape.get(k, 0) for k in ("x0", "x1", "y0", "y1"))
    if any(isinstance(v, str) for v in (x0, x1, y0, y1)):
        return  # a shape on a category axis: cheap to skip, rare in our charts
    if kind == "line":
        figure.add_artist(Line2D([x0, x1], [y0, y1], transform=transform, zorder=4, **style))
    else:
        figure.add_artist(
            Rectangle(
                (x0, y0),
                x1 - x0,
                y1 - y0,
                transform=transform,
                zorder=1,
                linewidth=0,
                facecolor=_color(shape.get("fillcolor")) or "#888",
                alpha=shape.get("opacity", 0.2),
            )
        )


def _annotation(axes: dict, note: dict, paper_transform) -> None:
    text = plain_text(note.get("text", ""))
    if not text:
        return
    xref, yref = note.get("xref", "x"), note.get("yref", "y")
    if xref == "paper" and yref == "paper" or not axes:
        ax, transform = next(iter(axes.values())), paper_transform
    else:
        ax = next((a for (xa, ya), a in axes.items() if xa == xref.split()[0]), next(iter(axes.values())))
        transform = ax.transAxes if xref.endswith("domain") else ax.transData
    ha = {"left": "left", "right": "right"}.get(note.get("xanchor"), "center")
    va = {"bottom": "bottom", "top": "top"}.get(note.get("yanchor"), "center")
    ax.text(
        note.get("x", 0.5),
        note.get("y", 0.5),
        text,
        transform=transform,
        ha=ha,
        va=va,
        clip_on=False,
        fontsize=min(10.0, ((note.get("font") or {}).get("size") or 12) * 0.65),
    )


def _line_handle(t: dict, color: str) -> Any:
    from matplotlib.lines import Line2D

    mode = t.get("mode") or "lines+markers"
    return Line2D(
        [],
        [],
        color=color,
        label=plain_text(t.get("name", "")),
        linestyle="-" if "lines" in mode else "none",
        marker="o" if "markers" in mode else None,
        markersize=4,
    )


def _shows_legend(t: dict, lay: dict, traces: list[dict]) -> bool:
    """plotly's rule, simplified: explicit showlegend wins; otherwise a legend appears once there are 2+ traces."""
    if t.get("type") in ("heatmap",) or not t.get("name"):
        return False
    if t.get("showlegend") is not None:
        return bool(t["showlegend"]) and lay.get("showlegend", True) is not False
    return lay.get("showlegend", len(traces) > 1) is not False and len(traces) > 1


def _scale_spec(t: dict, lay: dict) -> dict:
    """The colour scale settings of a trace: its own (heatmap) or its marker's, merged with a shared coloraxis."""
    own = dict(t if t.get("type") == "heatmap" else (t.get("marker") or {}))
    shared = lay.get(own.get("coloraxis") or "", {}) if own.get("coloraxis") else {}
    # the template's sequential scale is what plotly uses when neither the trace nor its colour axis names one
    default = ((lay.get("template") or {}).get("layout") or {}).get("colorscale", {}).get("sequential")
    return {"colorscale": default, **shared, **{k: v for k, v in own.items() if v is not None}}


def _scale_owner(t: dict, lay: dict) -> str | None:
    """Which colour bar a trace feeds ('coloraxis', or one per trace), or None when it shows none."""
    if t.get("type") == "heatmap":
        spec = _scale_spec(t, lay)
        return None if spec.get("showscale") is False else (t.get("coloraxis") or f"trace{id(t)}")
    marker = t.get("marker") or {}
    if marker.get("coloraxis"):
        return marker["coloraxis"]
    if marker.get("showscale"):
        return f"trace{id(t)}"
    return None


def _cmap(scale: Any, reverse: bool | None = None) -> Any:
    from matplotlib.colors import LinearSegmentedColormap

    if scale is None:
        scale = "Viridis"
    if isinstance(scale, str):
        from plotly.colors import get_colorscale

        try:
            scale = get_colorscale(scale)
        except Exception:  # noqa: BLE001 - an unknown name: fall back to plotly's default scale
            scale = get_colorscale("Plasma")
    stops = [(float(p), _color(c) or "#888") for p, c in scale]
    cmap = LinearSegmentedColormap.from_list("plotly", stops)
    return cmap.reversed() if reverse else cmap


def _color(value: Any) -> str | tuple | None:
    """A plotly colour string as matplotlib takes it ('rgb(1,2,3)', 'rgba(...)', '#hex', CSS names)."""
    if not isinstance(value, str):
        return None
    if m := re.fullmatch(r"\s*rgba?\(([^)]*)\)\s*", value):
        parts = [float(p) for p in m.group(1).split(",")]
        return (parts[0] / 255, parts[1] / 255, parts[2] / 255, parts[3] if len(parts) > 3 else 1.0)
    from matplotlib.colors import is_color_like

    return value if is_color_like(value) else None


# --------------------------------------------------------------------------- data helpers


def _spec(fig: Any) -> dict[str, Any]:
    if isinstance(fig, str):
        return json.loads(fig)
    if isinstance(fig, dict):
        return plotly_figure(fig).to_dict()  # validate and fill in trace types, as plotly would
    return fig.to_dict()


def plotly_figure(spec: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    # frames (animations) are dropped: the file shows the figure as it first appears
    return go.Figure({k: v for k, v in spec.items() if k in ("data", "layout")}, skip_invalid=True)


def _arr(value: Any) -> np.ndarray:
    """A data array from a list, a numpy/pandas array or plotly's base64 typed-array JSON ({'bdata', 'dtype'})."""
    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value.get("dtype", "f8")))
        shape = value.get("shape")
        if shape:
            out = out.reshape([int(s) for s in str(shape).split(",")] if isinstance(shape, str) else shape)
        return out
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) and "bdata" in v for v in value):
        return np.array([_arr(v) for v in value])
    out = np.asarray(value if value is not None else [])
    if out.dtype == object:  # lists with None: numbers become floats with nan, anything else stays as is
        try:
            return np.array([np.nan if v is None else v for v in out.ravel()], dtype=float).reshape(out.shape)
        except (TypeError, ValueError):
            return out
    return out


def _coords(values: Any, cats: list[str]) -> np.ndarray:
    """Numbers stay numbers; anything else (names, labels) becomes the index of its category on this axis."""
    arr = _arr(values)
    if arr.dtype.kind in "fiub":
        return arr.astype(float)
    out = []
    for v in arr.tolist():
        key = str(v)
        if key not in cats:
            cats.append(key)
        out.append(float(cats.index(key)))
    return np.array(out)


def _xy(t: dict, coords) -> tuple[np.ndarray, np.ndarray]:
    y = t.get("y")
    x = t.get("x")
    n = len(_arr(y)) if y is not None else len(_arr(x))
    x = coords(x if x is not None else np.arange(n), "x")
    y = coords(y if y is not None else np.arange(n), "y")
    return x, y


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around cell centres, so pcolormesh puts each cell where plotly does."""
    c = np.asarray(centres, dtype=float)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[:-1] + c[1:]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def _listify(value: Any, n: int) -> list:
    return [value] * n if isinstance(value, str) else list(_arr(value).tolist())[:n]


def _fill_template(template: str, fields: dict[str, Any]) -> str:
    """'%{z:.2f}' and '%{text}' as plotly fills them (d3 formats that Python shares; others print plainly)."""

    def one(m: re.Match) -> str:
        value, fmt = fields.get(m.group(1), ""), m.group(2)
        if isinstance(value, float) and not np.isfinite(value):
            return ""
        try:
            return format(value, fmt) if fmt else str(value)
        except (ValueError, TypeError):
            return str(value)

    return re.sub(r"%\{(\w+)(?::([^}]*))?\}", one, template)


def _axis(lay: dict, name: str) -> dict:
    """Layout of axis 'x2' (from 'xaxis2'); {} when the layout does not set it."""
    return lay.get(name[0] + "axis" + name[1:], {}) or {}


def _text(title: Any) -> str:
    return (title.get("text") or "") if isinstance(title, dict) else (title or "")


def plain_text(text: Any) -> str:
    """plotly's small HTML subset in titles and labels, as plain text."""
    text = re.sub(r"<br\s*/?>", "\n", str(text or ""), flags=re.I)
    return re.sub(r"<[^>]+>", "", text).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
