"""The report's front page, `index.html`: what ran (model, machine, dtype, date, versions, how long each notebook took),
then for each notebook two or three sentences with its headline numbers, a thumbnail of its key figure linking to the
notebook, and its raw metrics one click away. Every link is relative, so the folder can be zipped and opened anywhere.

The sentences are written here from each notebook's own `metrics.json` (the numbers its "what this notebook measured"
paragraphs show): one small function per notebook, `FINDINGS[stem](metrics) -> list[str]`. A notebook whose metrics
lack a number gets fewer sentences, never an error: the index is written even for a partial report.
"""

from __future__ import annotations

import html
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.figure_files import write_notebook_figures

# the figure shown as each notebook's thumbnail: the first whose file name contains one of these (else its first)
KEY_FIGURES = {
    "01_sampling_thoughts": ("temperature",),
    "02_information_gain": ("mean-reward-at-the-answers", "what-each-kind-of-thought"),
    "03_reward_designs": ("design-sanity", "signal-for-group"),
    "04_training": ("held-out-worksheet", "rlp-vs-next-token"),
    "05_evaluation": ("perplexity",),
}


def _num(m: dict[str, Any], key: str) -> float | None:
    v = m.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _pm(value: float, se: float | None) -> str:
    """A share with its standard error in percentage points: '38% ± 16 pt'."""
    return f"{value:.0%}" + (f" ± {se * 100:.0f} pt" if se is not None else "")


def findings_01(m: dict[str, Any]) -> list[str]:
    out = []
    if (r := _num(m, "reward_mean")) is not None:
        out.append(
            f"On {m.get('model', 'the model')}, {m.get('thoughts', '?')} sampled thoughts at {m.get('positions', '?')} "
            f"positions of document {m.get('document', '?')} scored {r:+.2f} nats on average; "
            f"{_num(m, 'share_positive') or 0:.0%} raised the likelihood of the true next token."
        )
    if (e := _num(m, "empty_thought_reward")) is not None:
        out.append(f"The empty thought alone scores {e:+.2f} nats: the cost of the markers before any word is written.")
    if (b := _num(m, "share_budget")) is not None:
        out.append(
            f"{b:.0%} of the thoughts ran to the token budget without closing (mean length "
            f"{_num(m, 'thought_tokens_mean') or 0:.1f} tokens)."
        )
    return out


def findings_02(m: dict[str, Any]) -> list[str]:
    out = []
    fam = m.get("probe_families") or {}
    if (r := _num(m, "reward_mean")) is not None:
        line = (
            f"On the base model every kind of thought hurt: sampled thoughts {r:+.2f} nats, "
            f"{_num(m, 'share_positive') or 0:.0%} positive"
        )
        if "empty" in fam and "leak" in fam:
            line += (
                f"; the empty thought alone costs {fam['empty']['reward_mean']:+.2f}, and stating the true next word "
                f"(the leak) scores {fam['leak']['reward_mean']:+.2f}"
            )
        out.append(line + ".")
    probes = m.get("answer_probes") or {}
    warm, base = probes.get("thinking-ready"), probes.get("base")
    if warm and base:
        n = m.get("answer_positions", "?")
        out.append(
            f"After the warm start, at {n} held-out answers: a thought stating the answer scores "
            f"{warm['leak']['reward_mean']:+.2f} nats (base {base['leak']['reward_mean']:+.2f}), the corpus's "
            f"scratchpad {warm['scratch']['reward_mean']:+.2f}, a restatement {warm['restate']['reward_mean']:+.2f}."
        )
        shares = m.get("empty_best_share") or {}
        if "base" in shares and "thinking-ready" in shares:
            out.append(
                f"The empty thought is the best action at {shares['base']:.0%} of the answers on the base model and "
                f"{shares['thinking-ready']:.0%} after the warm start."
            )
    return out


def findings_03(m: dict[str, Any]) -> list[str]:
    designs = m.get("designs") or {}
    if not designs:
        return []
    out = [
        f"{len(designs)} reward designs scored the same {m.get('thoughts', '?')} thoughts of document {m.get('document', '?')}."
    ]
    degenerate = [name for name, d in designs.items() if (d.get("degenerate_group_share") or 0) >= 0.5]
    if degenerate:
        out.append(
            f"{', '.join(degenerate)} gave every thought of a position the same reward in at least half of the "
            "groups: a group with equal rewards has zero advantage and teaches nothing."
        )
    sanity = (m.get("sanity") or {}).get("rlp")
    if sanity:
        out.append(
            f"On the probe thoughts RLP's reward ranks a stated answer above a wrong hint at "
            f"{sanity['leak>wrong_hint']:.0%} of positions, and the empty thought above informative ones at "
            f"{sanity['empty>informative']:.0%}."
        )
    return out


def findings_04(m: dict[str, Any]) -> list[str]:
    out = []
    a, b = _num(m, "rlp_first_reward_mean"), _num(m, "rlp_last_reward_mean")
    if a is not None and b is not None:
        line = f"RLP on the base model, {m.get('rlp_steps', '?')} steps: training reward {a:+.2f} → {b:+.2f} nats"
        la, lb = _num(m, "rlp_first_eval_loss"), _num(m, "rlp_last_eval_loss")
        if la is not None and lb is not None:
            line += f", held-out loss {la:.3f} → {lb:.3f} nats/token"
        out.append(line + ".")
    wa, wb_ = _num(m, "rlp_warm_first_eval_reward_mean"), _num(m, "rlp_warm_last_eval_reward_mean")
    if wa is not None and wb_ is not None:
        line = f"RLP from the warm start: held-out reward at the answers {wa:+.2f} → {wb_:+.2f} nats"
        ra, rb = (
            _num(m, "rlp_warm_first_eval_answer_accuracy_thinking"),
            _num(m, "rlp_warm_last_eval_answer_accuracy_thinking"),
        )
        if ra is not None and rb is not None:
            line += (
                f"; the answer after the model's own thought was right {_pm(ra, _num(m, 'rlp_warm_first_eval_answer_accuracy_thinking_se'))}"
                f" → {_pm(rb, _num(m, 'rlp_warm_last_eval_answer_accuracy_thinking_se'))} "
                f"at {m.get('rlp_warm_answers', '?')} held-out answers"
            )
        out.append(line + ".")
    if (d := _num(m, "rlp_minus_control_thinking_right")) is not None:
        se = _num(m, "rlp_minus_control_thinking_right_se") or 0.0
        out.append(
            f"RLP minus its null control (shuffled advantages), paired on the same answers: {d:+.0%} ± {se * 100:.0f} "
            "points."
        )
    return out


def findings_05(m: dict[str, Any]) -> list[str]:
    out = []
    ppl = {k: _num(m, f"ppl_{k}") for k in ("base", "rlp", "ntp")}
    if all(v is not None for v in ppl.values()):
        out.append(
            f"Held-out perplexity without thoughts: base {ppl['base']:.3f}, RLP {ppl['rlp']:.3f}, "
            f"NTP {ppl['ntp']:.3f} (NTP at the same training FLOPs)."
        )
    acc = {k: _num(m, f"mc_acc_{k}") for k in ("base", "rlp", "ntp")}
    if all(v is not None for v in acc.values()):
        n = m.get("mc_n")
        shown = {k: _pm(v, _num(m, f"mc_acc_se_{k}")) for k, v in acc.items()}
        out.append(
            f"Multiple choice with lm-eval{f' ({n} items, chance 25%)' if n else ''}: base {shown['base']}, "
            f"RLP {shown['rlp']}, NTP {shown['ntp']}."
        )
    a, b = _num(m, "warm_before_eval_answer_accuracy_thinking"), _num(m, "warm_after_eval_answer_accuracy_thinking")
    if a is not None and b is not None:
        out.append(
            f"From the warm start, the answer after the model's own thought: right {_pm(a, _num(m, 'warm_before_eval_answer_accuracy_thinking_se'))}"
            f" before RLP, {_pm(b, _num(m, 'warm_after_eval_answer_accuracy_thinking_se'))} after."
        )
    return out


FINDINGS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "01_sampling_thoughts": findings_01,
    "02_information_gain": findings_02,
    "03_reward_designs": findings_03,
    "04_training": findings_04,
    "05_evaluation": findings_05,
}


def findings(stem: str, metrics: dict[str, Any]) -> list[str]:
    """The headline sentences of one notebook's metrics (none for a notebook without a findings function)."""
    try:
        return FINDINGS.get(stem, lambda _: [])(metrics)
    except (KeyError, TypeError, ValueError) as e:  # a metrics file of another version: the index still gets written
        print(f"findings of {stem} not written: {type(e).__name__}: {e}", file=sys.stderr)
        return []


def notebook_info(ipynb: Path) -> dict[str, Any]:
    """An executed notebook's title (its first markdown heading), when it started and how long it ran (papermill
    records both in the notebook's metadata); {} for a notebook that cannot be read."""
    try:
        nb = json.loads(ipynb.read_text())
    except (OSError, ValueError):
        return {}
    meta = nb.get("metadata", {}).get("papermill", {})
    heading = next(
        (
            line[2:].strip()
            for cell in nb.get("cells", [])
            if cell.get("cell_type") == "markdown"
            for line in "".join(cell.get("source", "")).splitlines()
            if line.startswith("# ")
        ),
        None,
    )
    return {
        "title": heading,
        "seconds": meta.get("duration"),
        "start": meta.get("start_time"),
        "end": meta.get("end_time"),
        "status": meta.get("exception") and "failed" or "ok",
    }


def _relative(value: Any, report_dir: Path) -> Any:
    """Absolute paths inside the report shown relative to it (they break once the folder is moved)."""
    if isinstance(value, str) and value.startswith("/"):
        try:
            return str(Path(value).resolve().relative_to(report_dir.resolve()))
        except ValueError:
            return value
    return value


def _metrics_table(metrics: dict[str, Any], report_dir: Path) -> str:
    rows = []
    for k, v in metrics.items():
        v = _relative(v, report_dir)
        shown = f"{v:.4g}" if isinstance(v, float) else json.dumps(v)[:300] if isinstance(v, (dict, list)) else str(v)
        rows.append(f"<tr><td>{html.escape(k)}</td><td>{html.escape(shown)}</td></tr>")
    return "<table class='metrics'>" + "".join(rows) + "</table>"


def _key_figure(stem: str, figures: list[tuple[str, list[Path]]]) -> tuple[str, Path] | None:
    pngs = [(title, p) for title, paths in figures for p in paths if p.suffix == ".png"]
    for word in KEY_FIGURES.get(stem, ()):
        for title, p in pngs:
            if word in p.name:
                return title, p
    return pngs[0] if pngs else None


CSS = """
body{font-family:system-ui,sans-serif;max-width:64em;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} .meta{color:#555} table{border-collapse:collapse} td,th{padding:.2em .6em;text-align:left}
.timing td:nth-child(2){text-align:right} .nb{display:flex;gap:1.2em;border-top:1px solid #ddd;padding:1em 0}
.nb img{width:300px;border:1px solid #ccc} .nb .text{flex:1} .metrics{font-size:85%} .metrics td{border-bottom:1px solid #eee}
details{margin-top:.5em} .findings li{margin-bottom:.3em}
"""


def write_index(report_dir: Path, runs: list[tuple[str, Path]], formats: tuple[str, ...] = ("png", "svg")) -> Path:
    """index.html, and beside it figures/: every plotly chart of each executed notebook in `formats`
    (`<notebook>-<NN>-<title>.png`, NN = the chart's place in the notebook), the key one (PNG) as the notebook's
    thumbnail."""
    report_dir = Path(report_dir)
    sections, timings = [], []
    header: dict[str, Any] = {}
    for stem, run_dir in runs:
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        params_path = run_dir / "params.json"
        params = json.loads(params_path.read_text()) if params_path.exists() else {}
        if params and not header:
            header = params
        timing = notebook_info(run_dir / f"{stem}.ipynb")
        timing["model"] = (params.get("parameters") or {}).get("model")
        timings.append((stem, timing))
        rel = run_dir.relative_to(report_dir).as_posix()
        page = f"{rel}/{stem}.html"
        try:  # figure files are an extra: a failure here must not cost the report its index
            figures = write_notebook_figures(run_dir / f"{stem}.ipynb", report_dir / "figures", formats)
        except Exception as e:  # noqa: BLE001
            print(f"figures of {stem} not written: {type(e).__name__}: {e}", file=sys.stderr)
            figures = []
        key = _key_figure(stem, figures)
        thumb = (
            (
                f'<a href="{html.escape(page)}"><img src="figures/{html.escape(key[1].name)}" '
                f'alt="{html.escape(key[0])}" title="{html.escape(key[0])}"></a>'
            )
            if key
            else ""
        )
        said = findings(stem, metrics) or ["(no findings: the notebook recorded no metrics)"]
        links = "".join(
            f"<li>{html.escape(title)}: "
            + " ".join(f'<a href="figures/{html.escape(p.name)}">{p.suffix[1:].upper()}</a>' for p in paths)
            + "</li>"
            for title, paths in figures
        )
        sections.append(
            f"<div class='nb' id='{html.escape(stem)}'>{thumb}<div class='text'>"
            f"<h2><a href='{html.escape(page)}'>{html.escape(timing.get('title') or stem)}</a></h2>"
            f"<ul class='findings'>{''.join(f'<li>{html.escape(s)}</li>' for s in said)}</ul>"
            f"<details><summary>all metrics ({len(metrics)})</summary>{_metrics_table(metrics, report_dir)}</details>"
            + (
                f"<details><summary>figures ({len(figures)}, {' and '.join(f.upper() for f in formats)})</summary>"
                f"<ul>{links}</ul></details>"
                if figures
                else ""
            )
            + f"<p class='meta'><a href='{html.escape(rel)}/'>run directory</a>: the executed notebook, parameters, "
            "versions and metrics</p></div></div>"
        )
    hw, versions = header.get("hardware", {}), header.get("versions", {})
    model = (header.get("parameters") or {}).get("model", "?")
    total = sum(t.get("seconds") or 0 for _, t in timings)
    started = next((t["start"] for _, t in timings if t.get("start")), None)
    if started:
        from datetime import datetime

        try:
            started = f"{datetime.fromisoformat(started):%Y-%m-%d %H:%M} UTC"
        except ValueError:
            pass
    timing_rows = (
        "".join(
            f"<tr><td><a href='#{html.escape(stem)}'>{html.escape(t.get('title') or stem)}</a></td>"
            f"<td>{t['seconds']:.0f} s</td><td class='meta'>{html.escape(str(t.get('model') or ''))}</td></tr>"
            if t.get("seconds") is not None
            else f"<tr><td>{html.escape(stem)}</td><td>?</td><td></td></tr>"
            for stem, t in timings
        )
        + f"<tr><th>all five</th><th>{total:.0f} s ({total / 60:.1f} min)</th></tr>"
    )
    version_line = ", ".join(
        f"{k} {versions[k]}" for k in ("rlp-workbench", "torch", "transformers", "python") if k in versions
    )
    page = (
        "<!doctype html><meta charset='utf-8'><title>RLP workbench report</title>"
        f"<style>{CSS}</style><body><h1>RLP workbench report</h1>"
        f"<p class='meta'>Model <b>{html.escape(str(model))}</b> · {html.escape(hw.get('cpu', hw.get('device', '?')))} · "
        f"dtype {html.escape(hw.get('dtype', '?'))} · started {html.escape(str(started or '?'))} · {html.escape(version_line)}</p>"
        "<p>Each notebook ran headlessly with its default parameters; below, what each one measured, in its own numbers. "
        "A picture links to the executed notebook.</p>"
        f"<table class='timing'>{timing_rows}</table>" + "".join(sections) + "</body>"
    )
    out = report_dir / "index.html"
    out.write_text(page, encoding="utf-8")
    return out
