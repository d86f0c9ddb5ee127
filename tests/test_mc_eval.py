"""The offline multiple-choice evaluation: the loader, and lm-eval's scores of our task against a plain forward."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.mc_eval import (
    LM_EVAL_TASK,
    PROMPT,
    TARGET_DELIMITER,
    MCItem,
    load_mc_task,
    mc_summary,
)

GOOD = {"id": "q1", "question": "What is 2 + 2?", "choices": ["3", "4"], "answer": 1, "topic": "math"}


def _write(tmp_path, lines: list[str], name: str = "task.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_shipped_task_is_balanced():
    items = load_mc_task()
    assert len(items) == 40
    assert all(isinstance(item, MCItem) and len(item.choices) == 4 for item in items)
    assert sorted({item.topic for item in items}) == ["code", "math", "prose", "science"]
    assert [sum(item.answer == k for item in items) for k in range(4)] == [10, 10, 10, 10]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "is not valid JSON"),
        ('["a list"]', "must be a JSON object"),
        (json.dumps({**GOOD, "question": " "}), '"question"'),
        (json.dumps({**GOOD, "choices": ["only one"]}), '"choices"'),
        (json.dumps({**GOOD, "choices": ["a", 3]}), '"choices"'),
        (json.dumps({**GOOD, "answer": 2}), '"answer"'),
        (json.dumps({**GOOD, "answer": True}), '"answer"'),
        (json.dumps({**GOOD, "answer": "1"}), '"answer"'),
    ],
)
def test_loader_names_the_bad_line(tmp_path, line, message):
    path = _write(tmp_path, [json.dumps(GOOD).replace('"q1"', '"q0"'), line])
    with pytest.raises(WorkbenchError) as info:
        load_mc_task(path)
    text = str(info.value)
    assert "\n" not in text
    assert f"{path}:2" in text
    assert message in text


def test_loader_rejects_missing_empty_and_duplicate_files(tmp_path):
    with pytest.raises(WorkbenchError, match="no such file"):
        load_mc_task(tmp_path / "missing.jsonl")
    with pytest.raises(WorkbenchError, match="is empty"):
        load_mc_task(_write(tmp_path, [""]))
    with pytest.raises(WorkbenchError, match="repeats the id 'q1'"):
        load_mc_task(_write(tmp_path, [json.dumps(GOOD), json.dumps(GOOD)]))


def _needs_lm_eval():
    if importlib.util.find_spec("lm_eval") is None:
        pytest.skip("lm-eval is not installed (pip install lm-eval)")


def _first_argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda j: (values[j], -j))


@torch.inference_mode()
def _plain_logprobs(handle, item: MCItem) -> list[float]:
    """Each choice's summed log-softmax over its continuation tokens: one unbatched, unpadded forward per choice.

    The ids follow lm-eval's rule for causal models: the whole string and the context alone are encoded with the
    tokenizer's defaults (Gemma's <bos> first), the continuation is the whole encoding's tail after the context's
    length, and the model reads context + continuation.
    """
    context = PROMPT.format(question=item.question)
    assert context == context.rstrip()  # else lm-eval would move the trailing spaces into the continuation
    context_ids = list(handle.tokenizer(context).input_ids)
    out = []
    for choice in item.choices:
        whole = list(handle.tokenizer(context + TARGET_DELIMITER + choice).input_ids)
        ids = context_ids + whole[len(context_ids) :]
        logp = torch.log_softmax(handle.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
        out.append(sum(logp[t - 1, ids[t]].item() for t in range(len(context_ids), len(ids))))
    return out


def _scored_positions(handle, item: MCItem) -> set[tuple[tuple[int, ...], int]]:
    """(decoder input, position) of every continuation token of every choice: choices whose inputs are equal (one-token
    choices: the input is the context) share their positions."""
    context_ids = list(handle.tokenizer(item.context).input_ids)
    out = set()
    for c in item.choices:
        whole = context_ids + list(handle.tokenizer(item.context + TARGET_DELIMITER + c).input_ids)[len(context_ids) :]
        inp = tuple(whole[:-1])
        out |= {(inp, t) for t in range(len(context_ids) - 1, len(inp))}
    return out


def _plain_scores(handle, items: list[MCItem]) -> dict:
    logprobs = [_plain_logprobs(handle, item) for item in items]
    preds = [_first_argmax(lps) for lps in logprobs]
    preds_norm = [
        _first_argmax([lp / len(c) for lp, c in zip(lps, item.choices)]) for lps, item in zip(logprobs, items)
    ]
    return {
        "logprobs": logprobs,
        "pred": preds,
        "pred_norm": preds_norm,
        "acc": sum(p == item.answer for p, item in zip(preds, items)) / len(items),
        "acc_norm": sum(p == item.answer for p, item in zip(preds_norm, items)) / len(items),
    }


def _assert_same(result: dict, expected: dict, items: list[MCItem]):
    assert [row["id"] for row in result["per_item"]] == [item.id for item in items]
    for row, logprobs in zip(result["per_item"], expected["logprobs"]):
        assert row["logprobs"] == pytest.approx(logprobs, abs=1e-3)
    assert [row["pred"] for row in result["per_item"]] == expected["pred"]
    assert [row["pred_norm"] for row in result["per_item"]] == expected["pred_norm"]
    assert result["acc"] == expected["acc"] and result["acc_norm"] == expected["acc_norm"]
    assert result["n"] == len(items)


@pytest.mark.model
@pytest.mark.parametrize(
    "fixture", [pytest.param("gemma_fp32", marks=pytest.mark.slow), "smollm_fp32"]
)  # gemma: full suite
def test_lm_eval_scores_match_a_plain_forward(request, tmp_path, fixture):
    _needs_lm_eval()
    from workbench.mc_eval import mc_scores

    handle = request.getfixturevalue(fixture)
    items = load_mc_task()
    picked = [items[0], items[12], items[24], items[31]]  # one per topic, short and long choices
    path = _write(tmp_path, [json.dumps(item.__dict__) for item in picked], name="picked.jsonl")
    from workbench import work

    work.reset()
    result = mc_scores(handle, task_file=path, batch_size=3)  # batches mix items of different lengths
    # the LM head ran once at each distinct scored position only (HFLM runs it at every position of every padded row)
    assert work.METER.head_rows == len(set().union(*(_scored_positions(handle, item) for item in picked)))
    if fixture == "gemma_fp32":
        assert handle.tokenizer(picked[0].context).input_ids[0] == handle.tokenizer.bos_token_id  # scored after <bos>
    _assert_same(result, _plain_scores(handle, picked), picked)
    assert result["model"] == handle.label and set(result["by_topic"]) == {item.topic for item in picked}


@pytest.mark.model
@pytest.mark.slow  # fast tier: the sibling test above on four items; this one, all 40, in the full suite
def test_lm_eval_matches_a_plain_forward_on_the_whole_task(smollm_fp32, monkeypatch):
    _needs_lm_eval()
    from workbench.mc_eval import mc_scores

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(os.path.dirname(__file__))  # the task's data path must not depend on the working directory
    items = load_mc_task()
    result = mc_scores(smollm_fp32)
    _assert_same(result, _plain_scores(smollm_fp32, items), items)
    assert sum(t["n"] for t in result["by_topic"].values()) == 40


def test_summary_reads_lm_eval_samples():
    """mc_summary against an lm-eval output written by hand: argmax ties, length normalisation, mismatches."""
    items = [
        MCItem("a", "Which?", ("x", "a much longer one"), 1, "math"),
        MCItem("b", "Tie?", ("p", "q", "r"), 2, "prose"),
    ]
    samples = [  # lm-eval's log_samples entries, out of order as lm-eval may log them
        {
            "doc_id": 1,
            "doc": {"question": "Tie?"},
            "resps": [[[-3.0, False]], [[-3.0, False]], [[-5.0, False]]],
            "acc": 0.0,
            "acc_norm": 0.0,
        },
        {
            "doc_id": 0,
            "doc": {"question": "Which?"},
            "resps": [[[-1.0, True]], [[-2.0, False]]],
            "acc": 0.0,
            "acc_norm": 1.0,
        },
    ]
    results = {"results": {LM_EVAL_TASK: {"acc,none": 0.0, "acc_norm,none": 0.5}}, "samples": {LM_EVAL_TASK: samples}}
    summary = mc_summary(results, items, label="m")
    first, second = summary["per_item"]
    assert (first["id"], first["pred"], first["pred_norm"]) == ("a", 0, 1)  # -2/17 per character beats -1/1
    assert first["correct"] is False and first["correct_norm"] is True and first["logprobs"] == [-1.0, -2.0]
    assert (second["pred"], second["pred_norm"]) == (0, 0)  # ties go to the first choice, as numpy's argmax
    assert summary["acc"] == 0.0 and summary["acc_norm"] == 0.5 and summary["n"] == 2
    assert summary["by_topic"] == {
        "math": {"acc": 0.0, "acc_norm": 1.0, "n": 1},
        "prose": {"acc": 0.0, "acc_norm": 0.0, "n": 1},
    }
    with pytest.raises(WorkbenchError, match="not the task file's item"):
        mc_summary(results, items[::-1])
    with pytest.raises(WorkbenchError, match="log_samples=True"):
        mc_summary({"results": results["results"]}, items)


def test_a_bad_task_file_is_named_before_lm_eval_runs(tmp_path, monkeypatch):
    from workbench.mc_eval import mc_scores

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # not even lm-eval's absence hides the bad line
    path = _write(tmp_path, [json.dumps({**GOOD, "answer": 5})])
    with pytest.raises(WorkbenchError, match=f'{path}:1 needs "answer"'):
        mc_scores(None, task_file=path)


def test_lm_eval_run_says_how_to_install_it(monkeypatch):
    from workbench.mc_eval import lm_eval_missing, lm_eval_run

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` fail as if it were not installed
    hint = lm_eval_missing()
    assert hint and "\n" not in hint and "pip install lm-eval" in hint and "scripts/install.sh" in hint
    with pytest.raises(WorkbenchError, match="pip install lm-eval"):
        lm_eval_run(None, [LM_EVAL_TASK])


@pytest.mark.slow
def test_lm_eval_run_rejects_an_unknown_task():
    _needs_lm_eval()
    from workbench.mc_eval import lm_eval_run

    with pytest.raises(WorkbenchError, match="knows no task 'no_such_task'"):
        lm_eval_run(None, ["no_such_task"])
