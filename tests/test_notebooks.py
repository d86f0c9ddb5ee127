"""The curated notebooks run headlessly through `workbench run`, with small parameters."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SMALL = {
    "01_sampling_thoughts": [
        "positions",
        "every:60",
        "G",
        "2",
        "thought_tokens",
        "6",
        "sweep_temperatures",
        "[0.0, 1.0]",
        "sweep_budgets",
        "[2, 6]",
        "max_tokens",
        "160",
    ],
    # the thinking-ready sections run on the warm start shipped in data/warmstart (no training)
    "02_information_gain": ["positions", "every:12", "G", "2", "thought_tokens", "6", "max_tokens", "120"],
    "03_reward_designs": [
        "positions",
        "every:30",
        "G",
        "2",
        "thought_tokens",
        "6",
        "max_tokens",
        "120",
        "sweep_G",
        "[1, 2]",
        "sweep_budgets",
        "[2, 6]",
        "probe_positions",
        "every:40",
    ],
    # 04-05 train on SmolLM2-135M here: the same code paths, a quarter of Gemma's cost (the report runs Gemma)
    "04_training": [
        "model",
        "smollm2-135m",
        "max_steps",
        "2",
        "thought_tokens",
        "6",
        "positions_per_doc",
        "1",
        "G",
        "2",
        "guard_experiment",
        "True",
        "guard_steps",
        "2",
        "guard_thought_tokens",
        "4",
        "arena",
        "True",
        "arena_designs",
        "rlp,nover",
        "arena_steps",
        "1",
        "thinking_steps",
        "1",
    ],
    "05_evaluation": [
        "model",
        "smollm2-135m",
        "train_steps",
        "1",
        "positions",
        "every:20",
        "G",
        "2",
        "thought_tokens",
        "6",
    ],
}


# the counted work (workbench/work.py) each notebook may do: at the parameters above (held here, in CI) and at its
# defaults (what `workbench report` runs, measured by one); see notebooks/work_budgets.json
BUDGETS = json.loads((ROOT / "notebooks" / "work_budgets.json").read_text())


def check_work_budget(stem: str, metrics: dict) -> None:
    """A notebook's counted work at the test's parameters stays within its budget: more work fails until the budget is
    raised on purpose (work is counted in tokens, LM-head rows and FLOPs, which no machine changes)."""
    record = os.environ.get("WORKBENCH_RECORD_WORK")
    if record:  # a maintainer re-measuring the budgets: write what was counted, check nothing
        with open(record, "a") as fh:
            fh.write(
                json.dumps({"notebook": stem, **{k: v for k, v in metrics.items() if k.startswith("work_")}}) + "\n"
            )
        return
    budget = BUDGETS["notebooks"][stem]["test_work"]
    allowed = budget["work_flops"] * (1 + BUDGETS["tolerance"])
    assert metrics["work_flops"] <= allowed, (
        f"{stem} did {metrics['work_flops']:.4g} FLOPs of counted work at the test's parameters, over its budget of "
        f"{budget['work_flops']:.4g} (+{BUDGETS['tolerance']:.0%}) in notebooks/work_budgets.json. If the new work "
        f"belongs on the default path, raise the budget there on purpose (and say what it costs in the notebook)"
    )
    assert metrics["work_flops"] > 0 and metrics["work_tokens"] > 0


def test_default_parameters_are_the_ones_budgeted():
    """notebooks/work_budgets.json records each notebook's default parameters with the work they do; a changed default
    is a changed default path: re-measure it (workbench report) and update the budget file with it."""
    from workbench.notebook_runner import notebook_parameters

    for path in NOTEBOOKS:
        defaults = {k: v for k, v in notebook_parameters(path).items() if k != "run_dir"}
        recorded = BUDGETS["notebooks"][path.stem]["defaults"]
        changed = {k: (recorded.get(k), v) for k, v in defaults.items() if recorded.get(k) != v}
        assert not changed and set(recorded) == set(defaults), (
            f"{path.stem}: default parameters differ from notebooks/work_budgets.json (recorded, now): {changed}"
        )


def run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def test_notebooks_are_committed_without_outputs():
    assert len(NOTEBOOKS) >= 2
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged parameters"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs: strip them"


def test_papermill_parses_every_parameter_line():
    """papermill silently drops a parameter whose line it cannot parse (an `=` in its comment is enough):
    `workbench run -p NAME` would then warn "unknown parameter" and the report would lose its help text."""
    import ast

    from papermill.translators import PythonTranslator

    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assigned = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}
        parsed = {p.name for p in PythonTranslator.inspect(cell)}
        assert parsed == assigned, f"{path.name}: papermill cannot parse {sorted(assigned - parsed)}"


# the 04 case's training runs, handed to 05 as `workbench report` does (05 trains its own when run alone)
TRAINED: dict[str, str] = {}
# every executed notebook's run directory: the report index test below builds its index from them
EXECUTED: dict[str, Path] = {}


@pytest.fixture(scope="module")
def kept_runs(tmp_path_factory) -> Path:
    """A runs folder that outlives one test (a passed test's tmp_path is deleted): 04's runs feed 05."""
    return tmp_path_factory.mktemp("notebook-runs")


@pytest.mark.notebook
@pytest.mark.parametrize("stem", list(SMALL))
def test_notebook_runs_headlessly(tmp_path, kept_runs, stem):
    pairs = SMALL[stem]
    args = []
    for name, value in zip(pairs[::2], pairs[1::2]):
        args += ["-p", name, value]
    if stem == "05_evaluation" and TRAINED:
        args += [
            "-p",
            "rlp_run",
            TRAINED["rlp_run"],
            "-p",
            "ntp_run",
            TRAINED["ntp_run"],
            "-p",
            "rlp_warm_run",
            TRAINED["rlp_warm_run"],
        ]
    runs = kept_runs  # they outlive the test: 05 reads 04's runs, the index test reads all five
    proc = run("run", stem, *args, "--runs", str(runs), "--code", "fold")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])  # the last line printed is the run directory
    assert run_dir.parent == runs and run_dir.is_dir()
    executed = nbformat.read(run_dir / f"{stem}.ipynb", as_version=4)
    assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
    params = json.loads((run_dir / "params.json").read_text())
    assert params["parameters"]["G"] == 2 and params["parameters"]["seed"] == 0
    assert "torch" in params["versions"]
    from workbench.hardware import choose_dtype

    # "auto" is decided once, before the kernel starts, and recorded with its reason and the CPU
    assert params["hardware"]["dtype"] == choose_dtype("auto").name and params["hardware"]["dtype_reason"]
    assert params["hardware"]["cpu_capability"] and params["hardware"]["dtype_requested"] == "auto"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    check_work_budget(stem, metrics)
    if stem < "04":
        assert metrics["model"] == "gemma3-270m" and metrics["thoughts"] > 0
    page = (run_dir / f"{stem}.html").read_text()
    assert "Plotly.newPlot" in page  # charts are embedded with plotly.js inline: the report works offline
    assert "wb-code" in page and "overflow-x:auto" in page  # code folded under a click, wide tables scroll
    EXECUTED[stem] = run_dir
    if stem == "02_information_gain":
        assert "mean reward (nats)" in page and "hover a token" in page  # the token heat map
        assert "mean content gain" in page and "headroom (best probe" in page  # its two new layers
        assert "<th>family</th>" in page and "The next word is" in page  # the editor's static stand-in, headless
        families = metrics["probe_families"]
        assert set(families) == {"empty", "leak", "echo", "wrong_hint", "neutral", "sampled"}
        assert families["empty"]["content_gain_mean"] == 0.0 and 0 < metrics["editor_seconds"] < 60
        assert "What this notebook measured" in page
        assert "A thinking-ready model" in page and "answers of 3 held-out" in page  # base vs warm start at the answers
    if stem == "03_reward_designs":
        assert "The designs on a thinking-ready model" in page and "RLP's information gain: base" in page
        assert page.count("hover a token") >= 9  # one token map per design
        assert set(metrics["designs"]) >= {
            "rlp",
            "quiet_star",
            "vr_cli",
            "nover",
            "intuitor",
            "rpt",
            "pretrainzero",
            "rlpt",
            "reasoning_pattern",
        }
        assert set(metrics["sanity"]) == set(metrics["designs"])  # the sanity table covers every design
        assert all(0 <= row["leak>wrong_hint"] <= 1 for row in metrics["sanity"].values())
    if stem == "04_training":
        rlp, ntp = Path(metrics["rlp_run"]), Path(metrics["ntp_run"])
        assert rlp.parent == run_dir and ntp.parent == run_dir  # training runs live inside the notebook's run
        rlp_summary = json.loads((rlp / "summary.json").read_text())
        ntp_summary = json.loads((ntp / "summary.json").read_text())
        assert rlp_summary["steps"] == 2 and ntp_summary["stopped_by"] == "flops budget"
        assert ntp_summary["total_flops"] >= rlp_summary["total_flops"]  # matched compute (to one NTP step)
        assert metrics["guarded_last_share_empty"] == 0.0  # min_thought_tokens forbids empty thoughts
        assert metrics["faithful_last_share_empty"] == 0.0  # so does the paper's |c| >= 1
        assert (Path(metrics["empty_allowed_run"]) / "metrics.jsonl").exists()
        faithful = json.loads((Path(metrics["faithful_run"]) / "run.json").read_text())
        allowed = json.loads((Path(metrics["empty_allowed_run"]) / "run.json").read_text())
        assert faithful["deviations_from_paper"] == [] and any(
            "empty thought" in d for d in allowed["deviations_from_paper"]
        )
        # the arena: the same compute for the second design (to one step), the same evaluation for all runs
        assert metrics["arena_designs"] == ["rlp", "nover"]
        assert metrics["arena_nover_flops"] >= metrics["arena_rlp_flops"]
        evaluations = {
            json.dumps(json.loads((Path(p) / "run.json").read_text())["evaluation"], sort_keys=True)
            for p in (rlp, ntp, metrics["faithful_run"], metrics["guarded_run"])
        }
        assert len(evaluations) == 1  # RLP, NTP and the guard runs were evaluated alike
        # section 5: RLP from the (one-step) warm start at the thinking corpus's answers, with its film
        warm_rows = [
            json.loads(line) for line in (Path(metrics["rlp_warm_run"]) / "metrics.jsonl").read_text().splitlines()
        ]
        assert "eval_answer_accuracy_thinking" in warm_rows[-1] and warm_rows[-1]["step"] == 1
        assert len(list((Path(metrics["rlp_warm_run"]) / "film").glob("step-*.json"))) == 2
        assert "held-out worksheet, reward at the answers" in page
        TRAINED.update(rlp_run=metrics["rlp_run"], ntp_run=metrics["ntp_run"], rlp_warm_run=metrics["rlp_warm_run"])
    if stem == "05_evaluation":
        assert {"ppl_base", "ppl_rlp", "ppl_ntp", "mc_acc_base", "mc_acc_rlp", "reward_trained"} <= set(metrics)
        if TRAINED:
            assert metrics["rlp_run"] == TRAINED["rlp_run"] and metrics["ntp_run"] == TRAINED["ntp_run"]
            assert "warm_after_eval_answer_accuracy_thinking" in metrics  # section 5: warm start vs RLP from it
        assert "hover a token" in page


@pytest.mark.slow
def test_bad_parameter_is_rejected_before_the_kernel_starts(tmp_path):
    proc = run("run", "02", "-p", "G", "0", "--runs", str(tmp_path), timeout=120)
    assert proc.returncode != 0
    assert "parameter G" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # no run directory for a run that never started
    proc = run("run", "02", "-p", "colour", "blue", "--runs", str(tmp_path), timeout=120)
    assert proc.returncode != 0 and "unknown parameter" in proc.stderr


@pytest.mark.slow
def test_failing_cell_is_named_and_the_partial_notebook_kept(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("seed = 0\nrun_dir = ''")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('boom')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "broken.ipynb"
    nbformat.write(nb, path)
    proc = run("run", str(path), "--runs", str(tmp_path / "runs"), timeout=300)
    assert proc.returncode != 0
    assert "cell" in proc.stderr and "ValueError: boom" in proc.stderr
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1
    assert (run_dirs[0] / "broken.ipynb").exists() and (run_dirs[0] / "broken.html").exists()


@pytest.mark.notebook
def test_the_report_index_tells_the_findings_and_survives_a_move(tmp_path):
    """The report's front page, built from the five notebooks executed above: what ran and on which machine, each
    notebook's headline sentences with its numbers, a thumbnail of its key figure, the raw metrics a click away - and
    every link relative, so the folder still works after it is moved. In Chromium too, where one is installed."""
    import re
    import shutil

    from workbench.report_index import write_index

    if set(EXECUTED) != set(SMALL):
        pytest.skip(f"needs all five notebooks executed above (have {sorted(EXECUTED)})")
    report = tmp_path / "report"
    for stem, run_dir in EXECUTED.items():
        shutil.copytree(run_dir, report / stem)
    write_index(report, [(stem, report / stem) for stem in SMALL], formats=("png",))  # the report adds SVG
    moved = tmp_path / "elsewhere" / "copied-report"
    shutil.move(str(report), moved)
    page = (moved / "index.html").read_text()
    for stem in SMALL:
        assert f"id='{stem}'" in page
    assert "gemma3-270m" in page and "dtype " in page and "all five" in page  # model, machine, timing
    assert "nats on average" in page and "The empty thought alone scores" in page  # 01's sentences, with numbers
    assert "After the warm start, at" in page and "best action at" in page  # 02: base vs thinking-ready probes
    assert "reward designs scored the same" in page  # 03
    assert "RLP on the base model, 2 steps: training reward" in page and "RLP from the warm start" in page  # 04
    assert "Held-out perplexity without thoughts: base" in page  # 05
    assert "all metrics (" in page
    targets = re.findall(r'(?:href|src)="([^"#]+)"', page) + re.findall(r"(?:href|src)='([^'#]+)'", page)
    assert targets and not [t for t in targets if t.startswith("/") or "://" in t]  # relative only
    missing = [t for t in targets if not (moved / t).exists()]
    assert not missing, missing  # and each one resolves in the moved folder
    thumbs = re.findall(r'<img src="(figures/[^"]+\.png)"', page)
    assert len(thumbs) >= 4, thumbs  # 01-05 draw plotly figures; each notebook's key one is its thumbnail

    from test_browser import find_chromium

    chromium = find_chromium()
    if chromium is None or importlib.util.find_spec("playwright") is None:
        return  # the browser half needs Chromium and Playwright (scripts/install.sh --browser)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1300, "height": 1000})
        tab.goto((moved / "index.html").as_uri())
        tab.wait_for_load_state("load")
        sizes = tab.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        assert len(sizes) == len(thumbs) and all(w > 100 for w in sizes), sizes  # every thumbnail drew
        text = tab.inner_text("body")
        assert "RLP on the base model" in text and "all metrics" in text
        out = ROOT / "test-output" / "report-index"
        out.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(out / "index.png"), full_page=True)
        browser.close()
