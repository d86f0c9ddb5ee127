"""Figures as files: save a plotly figure as PNG and SVG, and pull the figures out of an executed notebook.

Two routes, chosen per call by `figure_route()`:

* "kaleido": plotly's own static export (`plotly.io.write_images`). Used only when kaleido is importable AND a
  Chrome/Chromium binary can be found ($BROWSER_PATH, `chromium`/`google-chrome` on PATH, or the copy that
  `plotly_get_chrome` downloads). Kaleido v1 (what plotly >= 6.1 needs) drives a headless Chrome; it ships none and
  cannot fetch one where the network reaches only package registries - the machine this was built on had no browser
  and no kaleido, so the workbench does not depend on this route. (Checked: kaleido 1.5.1 with Debian's `chromium`
  works, about 1.5 s a figure with one browser kept open per notebook.)
* "matplotlib": an offline redraw of the figure's JSON with matplotlib (`workbench.plotly_matplotlib`: the trace
  types and layout pieces our charts use; other trace types are skipped with one warning line).

Set WORKBENCH_FIGURE_ROUTE=matplotlib or =kaleido to force a route. If kaleido is chosen and fails at export time,
the matplotlib route is used instead (with a warning), so a report never stops for a figure.

This module and `plotly_matplotlib` import nothing else from `workbench` (they sit below the report code).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.plotly_matplotlib import DPI, plain_text, plotly_figure, render_matplotlib

log = logging.getLogger(__name__)

PLOTLY_MIME = "application/vnd.plotly.v1+json"
ROUTE_ENV = "WORKBENCH_FIGURE_ROUTE"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


# --------------------------------------------------------------------------- route and entry point


def find_browser() -> str | None:
    """A Chrome/Chromium binary kaleido could drive, or None."""
    env = os.environ.get("BROWSER_PATH")
    if env and os.access(env, os.X_OK):
        return env
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    try:  # kaleido's own helper also knows the copy `plotly_get_chrome` downloads
        from choreographer.browsers.chromium import Chromium

        return Chromium.find_browser(skip_local=False)
    except Exception:  # noqa: BLE001 - best effort: no choreographer, or an API change
        return None


def figure_route() -> str:
    """'kaleido' when plotly's static export can work here, else 'matplotlib' ($WORKBENCH_FIGURE_ROUTE overrides)."""
    forced = os.environ.get(ROUTE_ENV, "").strip().lower()
    if forced in ("kaleido", "matplotlib"):
        return forced
    return "kaleido" if importlib.util.find_spec("kaleido") and find_browser() else "matplotlib"


def save_figure(
    fig: Any, stem: str | Path, formats: Sequence[str] = ("png", "svg"), route: str | None = None
) -> list[Path]:
    """Write `stem.png`, `stem.svg` (one file per format) for a plotly figure (or its dict/JSON); return the paths."""
    fig = json.loads(fig) if isinstance(fig, str) else fig
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{fmt}") for fmt in formats]
    if (route or figure_route()) == "kaleido":
        try:
            import plotly.io as pio

            plotly_fig = fig if hasattr(fig, "write_image") else plotly_figure(fig)
            # one call for all formats: kaleido starts one browser per call unless a session is open
            with warnings.catch_warnings():  # plotly warns that its browser options go unused inside a session
                warnings.filterwarnings("ignore", message="The kopts argument is ignored")
                # 1000 px wide unless the figure says otherwise: about a notebook's width (plotly's own default is 700)
                pio.write_images(
                    [plotly_fig] * len(paths),
                    [str(p) for p in paths],
                    format=list(formats),
                    width=plotly_fig.layout.width or 1000,
                    scale=[1.5 if f == "png" else 1 for f in formats],
                )
            return paths
        except Exception as e:  # noqa: BLE001 - a browser that will not start must not stop a report
            log.warning("kaleido export failed (%s: %s); drawing %s with matplotlib", type(e).__name__, e, stem.name)
    figure = render_matplotlib(fig)
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):  # keep SVG text as <text>, searchable and small
        for path, fmt in zip(paths, formats):
            # "tight" grows the canvas where plotly would have grown a margin (long tick labels, long titles)
            figure.savefig(
                path, format=fmt, dpi=DPI * 1.5 if fmt == "png" else DPI, bbox_inches="tight", pad_inches=0.15
            )
    return paths


# --------------------------------------------------------------------------- executed notebooks


def notebook_figures(ipynb: str | Path) -> list[dict[str, Any]]:
    """Every plotly figure (as its JSON dict) in the outputs of an executed notebook, in the order they appear;
    none when the notebook file is missing (a run that failed before papermill wrote it)."""
    if not Path(ipynb).exists():
        return []
    nb = json.loads(Path(ipynb).read_text(encoding="utf-8"))
    return [
        out["data"][PLOTLY_MIME]
        for cell in nb.get("cells", [])
        for out in cell.get("outputs", [])
        if isinstance(out.get("data"), dict) and PLOTLY_MIME in out["data"]
    ]


def figure_title(spec: dict[str, Any]) -> str:
    title = spec.get("layout", {}).get("title")
    text = title.get("text") if isinstance(title, dict) else title
    return plain_text(text or "")


def write_notebook_figures(
    ipynb: str | Path, out_dir: str | Path, formats: Sequence[str] = ("png", "svg")
) -> list[tuple[str, list[Path]]]:
    """The key-figure rule of the report: every plotly output of the notebook, in order, written as
    `<out_dir>/<notebook>-<NN>-<title slug>.<fmt>`. Returns (title, paths) per figure. A figure that fails to draw
    is logged and left out; the others are still written."""
    ipynb = Path(ipynb)
    written: list[tuple[str, list[Path]]] = []
    specs, route = notebook_figures(ipynb), figure_route()
    if specs and route == "matplotlib" and importlib.util.find_spec("matplotlib") is None:
        log.warning("no figure files for %s: neither matplotlib nor kaleido with a browser is installed", ipynb.name)
        return written
    session = _kaleido_session(route == "kaleido" and len(specs) > 1)
    try:
        for i, spec in enumerate(specs, start=1):
            title = figure_title(spec) or f"figure {i}"
            slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:48].rstrip("-") or "figure"
            try:
                stem = Path(out_dir) / f"{ipynb.stem}-{i:02d}-{slug}"
                written.append((title, save_figure(spec, stem, formats, route)))
            except Exception as e:  # noqa: BLE001 - one bad figure must not cost the report its other figures
                log.warning("figure %d of %s not written (%s: %s)", i, ipynb.name, type(e).__name__, e)
    finally:
        if session:
            session.stop_sync_server(silence_warnings=True)
    return written


def _kaleido_session(wanted: bool) -> Any:
    """kaleido with one browser kept open for a batch of figures (a fresh Chrome per figure costs seconds), or None."""
    if not wanted:
        return None
    try:
        import kaleido

        kaleido.start_sync_server(silence_warnings=True)
        return kaleido
    except Exception:  # noqa: BLE001 - an older kaleido or none: each figure starts its own browser
        return None


__all__ = [
    "figure_route",
    "find_browser",
    "notebook_figures",
    "render_matplotlib",
    "save_figure",
    "write_notebook_figures",
    "PLOTLY_MIME",
]
