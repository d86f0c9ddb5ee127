"""Figures as files (issue 19): plotly figures saved as PNG and SVG without a browser, and the report's figures/ folder.

Fast: tiny figures, no model. The matplotlib route is forced where the test is about the drawing, so a machine that
happens to have kaleido and Chrome still tests the offline route."""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from plotly.subplots import make_subplots

from workbench import figure_files, plotly_matplotlib
from workbench.figure_files import PLOTLY_MIME, figure_route, notebook_figures, render_matplotlib, save_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def offline_route(monkeypatch):
    monkeypatch.setenv(figure_files.ROUTE_ENV, "matplotlib")


def heatmap_figure() -> go.Figure:
    z = np.array([[0.1, -0.8, 0.5], [0.9, 0.0, -0.3]])
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=["a", "b", "c"],
            y=["r1", "r2"],
            colorscale="RdBu",
            zmid=0,
            texttemplate="%{z:.2f}",
            colorbar={"title": {"text": "reward"}},
        )
    )
    fig.update_layout(title="Heat of the tokens", width=600, height=400)
    return fig


def line_figure() -> go.Figure:
    fig = go.Figure(
        [
            go.Scatter(x=[0, 1, 2, 3], y=[1, 3, 2, 4], mode="lines+markers", name="policy"),
            go.Scatter(x=[0, 1, 2, 3], y=[2, 2, 1, 0], mode="lines", name="teacher", line={"dash": "dot"}),
        ]
    )
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(title="Reward along the document", xaxis_title="position t", yaxis_title="nats")
    return fig


def bar_figure() -> go.Figure:
    fig = go.Figure(
        [
            go.Bar(x=["empty", "leak", "echo"], y=[-1.0, 2.0, 0.5], name="reward"),
            go.Bar(x=["empty", "leak", "echo"], y=[0.0, 3.0, 1.5], name="content gain"),
        ]
    )
    fig.update_layout(barmode="group", title="What each kind of thought earns")
    return fig


def subplots_figure() -> go.Figure:
    fig = make_subplots(rows=2, cols=2, subplot_titles=["loss", "reward", "length", "drift"])
    for i in range(4):
        fig.add_trace(
            go.Scatter(x=[1, 2, 3], y=[i, i + 1, i * 2], name=f"m{i}", showlegend=False), row=i // 2 + 1, col=i % 2 + 1
        )
    fig.update_layout(title="Training curves", height=500)
    return fig


def check_png(path: Path, wider_than_tall: bool = True) -> tuple[int, int]:
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert len(data) > 5_000
    with Image.open(path) as image:
        width, height = image.size
        colours = len(image.convert("RGB").resize((120, 80)).getcolors(maxcolors=120 * 80))
    assert 300 < width < 4000 and 200 < height < 4000, (width, height)
    assert (width > height) == wider_than_tall
    assert colours > 10, "the picture is (nearly) blank"
    return width, height


def svg_text(path: Path) -> str:
    root = ET.parse(path).getroot()  # raises if the SVG is not well-formed XML
    assert root.tag.endswith("svg")
    return " ".join(t for t in root.itertext())


@pytest.mark.parametrize(
    "make, words",
    [
        (heatmap_figure, ["Heat of the tokens", "reward", "r1", "0.90", "-0.80"]),
        (line_figure, ["Reward along the document", "policy", "teacher", "position t", "nats"]),
        (bar_figure, ["What each kind of thought earns", "content gain", "leak"]),
        (subplots_figure, ["Training curves", "loss", "reward", "length", "drift"]),
    ],
)
def test_each_trace_type_becomes_a_png_and_an_svg_with_its_text(tmp_path, make, words):
    paths = save_figure(make(), tmp_path / "sub" / "fig")
    assert paths == [tmp_path / "sub" / "fig.png", tmp_path / "sub" / "fig.svg"]
    check_png(paths[0])
    text = svg_text(paths[1])
    for word in words:
        assert word in text, f"{word!r} missing from the SVG"


def test_the_drawing_has_the_parts_of_the_figure():
    heat = render_matplotlib(heatmap_figure())
    assert len(heat.axes) == 2, "a heatmap with a colour bar draws two axes"
    assert heat.axes[1].get_ylabel() == "reward"
    assert len(render_matplotlib(subplots_figure()).axes) == 4
    bars = render_matplotlib(bar_figure()).axes[0]
    rects = [p for p in bars.patches if p.get_height() != 0]
    assert len(rects) == 5  # six bars, one of height 0
    # grouped: the two bars of one category sit side by side, not on top of each other
    xs = sorted(round(p.get_x(), 3) for p in bars.patches)
    assert len(set(xs)) == 6
    line = render_matplotlib(line_figure()).axes[0]
    assert [t.get_text() for t in line.get_xticklabels()] and line.get_xlabel() == "position t"
    assert any(list(drawn.get_ydata()) == [1, 3, 2, 4] for drawn in line.get_lines())


def test_histogram_box_and_a_continuous_marker_colour_draw(tmp_path, caplog):
    rng = np.random.default_rng(0)
    fig = make_subplots(rows=1, cols=2)
    fig.add_trace(go.Histogram(x=rng.normal(size=200), nbinsx=20, name="budget"), row=1, col=1)
    fig.add_trace(go.Histogram(x=rng.normal(1, size=50), nbinsx=20, name="eos"), row=1, col=1)
    fig.add_trace(go.Box(x=np.repeat([4, 8], 20), y=rng.normal(size=40), boxpoints="all"), row=1, col=2)
    marker = {"color": [1.0, 2.0, 3.0], "colorscale": "Viridis", "showscale": True}
    fig.add_trace(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], mode="markers", showlegend=False, marker=marker), row=1, col=2)
    fig.update_layout(barmode="overlay", title="Distribution of rewards")
    with caplog.at_level(logging.WARNING, logger="workbench"):
        png, _ = save_figure(fig, tmp_path / "mixed")
    assert not caplog.records, caplog.text
    check_png(png)
    drawn = render_matplotlib(fig)
    assert len(drawn.axes) == 3  # two panels and the marker colour bar
    assert len(drawn.axes[0].patches) == 40  # 20 shared bins for each of the two histograms


def test_an_unsupported_trace_is_skipped_with_one_warning(tmp_path, caplog):
    fig = go.Figure([go.Pie(values=[1, 2], labels=["a", "b"]), go.Scatter(y=[1, 2, 3], name="kept")])
    fig.update_layout(title="Mixed")
    with caplog.at_level(logging.WARNING, logger="workbench"):
        paths = save_figure(fig, tmp_path / "mixed")
    assert all(p.stat().st_size > 0 for p in paths)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "pie" in warnings[0], warnings


def test_plotly_json_with_typed_arrays_round_trips():
    """Notebook outputs carry numpy data as base64 typed arrays ({'bdata', 'dtype', 'shape'}); they must decode."""
    z = np.arange(12, dtype=float).reshape(3, 4)
    spec = json.loads(go.Figure(go.Heatmap(z=z)).to_json())
    assert isinstance(spec["data"][0]["z"], dict) and "bdata" in spec["data"][0]["z"]  # the case under test
    assert np.array_equal(plotly_matplotlib._arr(spec["data"][0]["z"]), z)
    mesh = render_matplotlib(spec).axes[0].collections[0]
    assert np.array_equal(np.asarray(mesh.get_array()).reshape(3, 4), z)


def test_the_route(monkeypatch, tmp_path):
    monkeypatch.delenv(figure_files.ROUTE_ENV)
    monkeypatch.setattr(figure_files, "find_browser", lambda: None)
    assert figure_route() == "matplotlib"  # no browser: never kaleido, whatever is installed
    monkeypatch.setattr(figure_files, "find_browser", lambda: "/usr/bin/chromium")
    real_find_spec = figure_files.importlib.util.find_spec
    monkeypatch.setattr(
        figure_files.importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "kaleido" else real_find_spec(name, *a),
    )
    assert figure_route() == "kaleido"
    monkeypatch.setenv(figure_files.ROUTE_ENV, "matplotlib")
    assert figure_route() == "matplotlib"

    def broken(*args, **kwargs):
        raise RuntimeError("no browser could start")

    import plotly.io as pio

    monkeypatch.setattr(pio, "write_images", broken)
    paths = save_figure(line_figure(), tmp_path / "fallback", route="kaleido")  # falls back, does not raise
    check_png(paths[0])


# --------------------------------------------------------------------------- the report's figures/ folder


def executed_notebook(path: Path, figures: list[go.Figure]) -> Path:
    """A minimal executed notebook: a text output, then one plotly mime bundle per figure (what plotly's
    notebook renderer leaves in the .ipynb), then an HTML output."""
    outputs = [{"output_type": "stream", "name": "stdout", "text": ["hello\n"]}]
    for fig in figures:
        outputs.append(
            {
                "output_type": "display_data",
                "metadata": {},
                "data": {PLOTLY_MIME: json.loads(fig.to_json()), "text/html": ["<div>plot</div>"]},
            }
        )
    outputs.append({"output_type": "display_data", "metadata": {}, "data": {"text/html": ["<b>token map</b>"]}})
    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# t"]},
            {"cell_type": "code", "metadata": {}, "execution_count": 1, "source": ["x"], "outputs": outputs},
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))
    return path


def test_the_report_writes_and_links_every_plotly_figure(tmp_path):
    from workbench.report_index import write_index

    report = tmp_path / "report-1"
    run_a = report / "02_information_gain"
    executed_notebook(run_a / "02_information_gain.ipynb", [heatmap_figure(), bar_figure()])
    (run_a / "metrics.json").write_text(json.dumps({"mean_reward": -1.5}))
    run_b = report / "05_evaluation"
    run_b.mkdir()  # a notebook that left no .ipynb: the index is still written, without figures for it
    assert len(notebook_figures(run_a / "02_information_gain.ipynb")) == 2

    index = write_index(report, [("02_information_gain", run_a), ("05_evaluation", run_b)])

    names = sorted(p.name for p in (report / "figures").iterdir())
    assert names == [
        "02_information_gain-01-heat-of-the-tokens.png",
        "02_information_gain-01-heat-of-the-tokens.svg",
        "02_information_gain-02-what-each-kind-of-thought-earns.png",
        "02_information_gain-02-what-each-kind-of-thought-earns.svg",
    ]
    check_png(report / "figures" / names[0])
    assert "Heat of the tokens" in svg_text(report / "figures" / names[1])
    page = index.read_text()
    links = [h for h in re.findall(r'href="([^"]+)"', page) if h.startswith("figures/")]
    assert sorted(Path(h).name for h in links) == names
    assert all((report / h).is_file() for h in links)
    assert "05_evaluation" in page and "<td>mean_reward</td><td>-1.5</td>" in page


@pytest.mark.skipif(
    not (figure_files.importlib.util.find_spec("kaleido") and figure_files.find_browser()),
    reason="plotly's static export needs kaleido and a Chrome/Chromium binary",
)
def test_the_kaleido_route_where_a_browser_is_available(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="workbench"):
        png, svg = save_figure(bar_figure(), tmp_path / "kaleido", route="kaleido")
    assert not caplog.records, caplog.text  # no fallback to matplotlib
    check_png(png)
    assert "main-svg" in svg.read_text()  # plotly's own SVG, not matplotlib's
    assert "What each kind of thought earns" in svg_text(svg)
