"""The documentation site builds strictly and offline (`mkdocs build --strict`: a broken link, a missing page or a
docstring mkdocstrings cannot find fails the build), and the pages generated from the code say what the code does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # about 25 s: mkdocs, mkdocs-jupyter and mkdocstrings over the whole package
def test_the_site_builds_strictly_offline(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", HF_HUB_OFFLINE="1")
    env.pop("WORKBENCH_DOCS_REPORT", None)  # the committed notebooks, as CI has no report
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "docs", "--out", str(site)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert proc.stdout.strip().splitlines()[-1] == str(site / "index.html")
    for page in (
        "index.html",
        "getting-started.html",
        "tutorials/04_training.html",
        "how-to/train.html",
        "science/findings.html",
        "reference/cli.html",
        "reference/config.html",
        "reference/api.html",
        "benchmarks/index.html",
        "development.html",
    ):
        assert (site / page).is_file(), page
    cli = (site / "reference" / "cli.html").read_text()
    assert "workbench compare-runs" in cli and "--keep-weights" in cli and "workbench docs" in cli
    config = (site / "reference" / "config.html").read_text()
    assert "shuffled_advantages" in config and "train_embeddings" in config  # field help, from the dataclasses
    assert "checkpoint_problem" in (site / "reference" / "api.html").read_text()  # docstrings, from mkdocstrings
    assert "Training with RLP" in (site / "tutorials" / "04_training.html").read_text()
    assert (site / "images" / "heatmap.png").is_file()
    assert not list(ROOT.glob("docs/tutorials")), "the build must not write into docs/"


def test_the_tutorials_are_a_reports_executed_notebooks_when_given_one(tmp_path):
    """`workbench docs --report DIR`: each notebook that DIR executed is rendered with its outputs; one it lacks falls
    back to the committed notebook."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from docs_hooks import notebook_sources
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    report = tmp_path / "report"
    (report / "02_information_gain").mkdir(parents=True)
    executed = report / "02_information_gain" / "02_information_gain.ipynb"
    executed.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    sources = notebook_sources(str(report))
    assert sources["02_information_gain"] == executed
    assert sources["04_training"] == ROOT / "notebooks" / "04_training.ipynb"
    assert notebook_sources(None)["02_information_gain"] == ROOT / "notebooks" / "02_information_gain.ipynb"


def test_docs_refuses_a_missing_report_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "docs", "--report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 1 and "no such folder" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("page", sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")))
def test_every_written_page_is_in_the_navigation(page):
    import yaml

    nav = json.dumps(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    assert page in nav, f"docs/{page} is not in mkdocs.yml's nav"
