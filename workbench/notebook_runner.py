"""Headless notebook runs: validate parameters, execute with papermill, export HTML, keep everything.

runs/<notebook>-<timestamp>/
    <notebook>.ipynb   the executed notebook (written even when a cell fails)
    <notebook>.html    an offline HTML export: token maps are plain HTML, plotly.js is embedded
    params.json        the parameters as run, with the seed and package versions
    metrics.json       what the notebook recorded with workbench.save_metrics(run_dir, ...)
"""

from __future__ import annotations

import ast
import io
import os
import sys
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.params import validate
from workbench.run_dirs import HEADLESS_ENV, new_run_dir, versions, write_json

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
CURATED = ("01_sampling_thoughts", "02_information_gain", "03_reward_designs", "04_training", "05_evaluation")
# metrics a notebook saves that later notebooks take as parameters (04's trained runs feed 05)
CARRIED = ("rlp_run", "ntp_run", "rlp_warm_run")


def find_notebook(name: str) -> Path:
    """A notebook by path, by file stem ('02_information_gain') or by number ('02')."""
    path = Path(name).expanduser()
    if path.suffix == ".ipynb":
        if not path.is_file():
            raise WorkbenchError(f"no such notebook: {path}")
        return path
    matches = sorted(NOTEBOOKS_DIR.glob(f"{name}*.ipynb"))
    if len(matches) != 1:
        found = ", ".join(p.stem for p in sorted(NOTEBOOKS_DIR.glob("*.ipynb")))
        raise WorkbenchError(f"no single notebook matches {name!r}; curated notebooks: {found}")
    return matches[0]


def _parameters_source(path: Path) -> str:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell.source
    raise WorkbenchError(f"{path.name} has no cell tagged 'parameters'")


@dataclass(frozen=True)
class ParameterHelp:
    """One notebook parameter as its `parameters` cell states it: `name = default  # help`."""

    name: str
    default: Any
    type: str
    help: str


def parameter_help(path: Path) -> list[ParameterHelp]:
    """Every parameter of a notebook, read from the notebook itself: the literal it is set to and the comment at the
    end of its line (the one-line help `workbench run NOTEBOOK --help` prints)."""
    source = _parameters_source(path)
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    out = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            default = ast.literal_eval(node.value)
            out.append(
                ParameterHelp(node.targets[0].id, default, type(default).__name__, comments.get(node.end_lineno, ""))
            )
    return out


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The defaults of the cell tagged `parameters` (literal assignments only)."""
    return {p.name: p.default for p in parameter_help(path)}


def format_parameter_help(path: Path) -> str:
    """`workbench run NOTEBOOK --help`: each parameter with its default, type and help, as the notebook states them."""
    params = parameter_help(path)
    width = max(len(p.name) for p in params)
    shown = [(p, repr(p.default)) for p in params]
    value_width = min(24, max(len(v) for _, v in shown))
    lines = [f"workbench run {path.stem}: parameters (set with -p NAME VALUE; values are Python literals)", ""]
    for p, value in shown:
        lines.append(f"  {p.name:<{width}}  {p.type:<5}  {value:<{value_width}}  {p.help}".rstrip())
    return "\n".join(lines)


def parse_value(text: str) -> Any:
    """A -p value: a Python/JSON literal when it parses as one ('4', '0.7', '[8, 16]'), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run_notebook(
    notebook: str | Path,
    overrides: dict[str, Any] | None = None,
    runs_root: str | Path | None = None,
    run_dir: Path | None = None,
    log=None,
    code: str = "show",
) -> Path:
    """Execute one notebook headlessly into a new run directory; returns the directory.

    Raises WorkbenchError naming the failing cell when a cell fails (the partial notebook and its
    HTML are still written).
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    log = log or (lambda msg: print(msg, file=sys.stderr))
    path = find_notebook(str(notebook))
    defaults = notebook_parameters(path)
    params = dict(defaults)
    params.update(overrides or {})
    params = validate(params, known=set(defaults))  # before any kernel starts
    run_dir = run_dir or new_run_dir(path.stem, runs_root)
    run_dir.mkdir(parents=True, exist_ok=True)
    params["run_dir"] = str(run_dir.resolve())
    hardware = hardware_record(params.get("dtype", "auto"))
    write_json(
        run_dir / "params.json",
        {"notebook": path.name, "parameters": params, "hardware": hardware, "versions": versions()},
    )
    out_nb = run_dir / path.name
    os.environ[HEADLESS_ENV] = "1"  # the kernel inherits it: widgets give way to static views
    log(f"running {path.name} -> {run_dir}")
    start = time.perf_counter()
    failure: str | None = None
    try:
        pm.execute_notebook(
            str(path),
            str(out_nb),
            parameters=params,
            kernel_name="python3",
            progress_bar=sys.stderr.isatty(),
            cwd=str(path.parent),
            log_output=False,
        )
    except PapermillExecutionError as exc:
        failure = f"{path.name}: cell {exc.exec_count} failed: {exc.ename}: {str(exc.evalue).splitlines()[0] if exc.evalue else ''}"
    finally:
        if out_nb.exists():
            export_html(out_nb, code)
    elapsed = time.perf_counter() - start
    log(f"{path.name} finished in {elapsed:.0f} s" if failure is None else failure)
    if failure is not None:
        raise WorkbenchError(f"{failure} (partial notebook in {run_dir})")
    return run_dir


def hardware_record(dtype: str) -> dict[str, str]:
    """The dtype a notebook will run in, why, and on which CPU - decided here, before the kernel starts.

    "auto" is decided once in this process and handed to the kernel through WORKBENCH_AUTO_DTYPE, so the
    notebook runs in exactly the dtype params.json records (and does not repeat the timed probe)."""
    import os

    from workbench.hardware import AUTO_ENV, choose_dtype, resolve_device

    choice = choose_dtype(dtype, resolve_device("auto"))
    if dtype == "auto" and not os.environ.get(AUTO_ENV):
        os.environ[AUTO_ENV] = choice.name
        os.environ[AUTO_ENV + "_REASON"] = choice.reason
    return choice.as_dict()


CODE_VIEWS = ("fold", "hide", "show")
# wide dataframes scroll inside their output instead of running off the page; folded code opens on a click
EXPORT_CSS = (
    ".jp-OutputArea-output{overflow-x:auto;max-width:100%}"
    "details.wb-code>summary{cursor:pointer;color:#666;font-size:85%;margin:.2em 0}"
)
FOLD_JS = (
    "document.querySelectorAll('.jp-CodeCell > .jp-Cell-inputWrapper').forEach(function(w){"
    "var d=document.createElement('details');d.className='wb-code';var s=document.createElement('summary');"
    "s.textContent='code';d.appendChild(s);w.parentNode.insertBefore(d,w);d.appendChild(w);});"
)


def export_html(notebook_path: Path, code: str = "show") -> Path:
    """An HTML copy that renders offline (plotly.js already inline in the outputs). `code`: "show" every code cell,
    "fold" each one under a click-to-open "code" line (the report's default: readers come for the results), or "hide"
    them (nbconvert's exclude_input)."""
    import nbformat
    from nbconvert import HTMLExporter

    if code not in CODE_VIEWS:
        raise WorkbenchError(f"code view {code!r}: choose one of {', '.join(CODE_VIEWS)}")
    nb = nbformat.read(notebook_path, as_version=4)
    body, _ = HTMLExporter(exclude_input=code == "hide").from_notebook_node(nb)
    extra = f"<style>{EXPORT_CSS}</style>" + (f"<script>{FOLD_JS}</script>" if code == "fold" else "")
    body = body.replace("</body>", extra + "</body>", 1) if "</body>" in body else body + extra
    out = notebook_path.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def run_report(
    overrides: dict[str, Any] | None = None,
    runs_root: str | Path | None = None,
    log=None,
    keep_weights: bool = False,
    code: str = "fold",
) -> Path:
    """The main job: run the curated notebooks into one report directory with an index.html. The training runs'
    weights (1-2 GB of fp32 each; notebook 05 reads them) are deleted once the last notebook has run, unless
    `keep_weights`: a report is something people copy and keep."""
    overrides = dict(overrides or {})
    report_dir = new_run_dir("report", runs_root)
    done: list[tuple[str, Path]] = []
    carried: dict[str, Any] = {}
    for name in CURATED:
        path = find_notebook(name)
        accepted = notebook_parameters(path)
        own = {k: v for k, v in {**carried, **overrides}.items() if k in accepted}
        run_dir = run_notebook(path, own, run_dir=report_dir / path.stem, log=log, code=code)
        done.append((path.stem, run_dir))
        metrics_path = run_dir / "metrics.json"
        if metrics_path.exists():
            import json

            saved = json.loads(metrics_path.read_text())
            carried.update({k: saved[k] for k in CARRIED if saved.get(k)})
    from workbench.report_index import write_index

    write_index(report_dir, done)
    if not keep_weights:
        for run in drop_weights(report_dir):
            (log or print)(
                f"weights of {run.relative_to(report_dir)} removed (read by the notebooks; --keep-weights keeps them)"
            )
    return report_dir / "index.html"


WEIGHTS_REMOVED = "WEIGHTS_REMOVED.txt"


def drop_weights(report_dir: Path) -> list[Path]:
    """Delete the checkpoints of every training run inside `report_dir`, leaving its config, metrics, rollouts and a
    note saying how to get the weights back. Returns the runs it touched."""
    import shutil

    touched = []
    for checkpoints in sorted(report_dir.rglob("checkpoints")):
        run = checkpoints.parent
        if not checkpoints.is_dir() or not (run / "config.yaml").is_file():
            continue
        shutil.rmtree(checkpoints)
        (run / WEIGHTS_REMOVED).write_text(
            "The weights of this run were deleted after the report's notebooks had read them (a report stays small "
            "enough to copy).\nThe same numbers again, with weights: workbench train config.yaml --output-dir NEW_DIR "
            "(same config, same seed; on the same kind of machine)\nor build the report with: workbench report "
            "--keep-weights\n"
        )
        touched.append(run)
    return touched
