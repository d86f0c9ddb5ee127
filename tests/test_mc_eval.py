"""The offline multiple-choice evaluation: the loader, the scores against a plain forward, and lm-eval."""

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
    MCItem,
    TARGET_DELIMITER,
    encode_pair,
    load_mc_task,
    mc_accuracy,
)

GOOD = {"id": "q1", "question": "What is 2 + 2?", "choices": ["3", "4"], "answer": 1, "topic": "math"}


def _write(tmp_path, lines: list[str]):
    path = tmp_path / "task.jsonl"
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


def _plain_logprob(handle, item: MCItem, choice: str) -> float:
    """Summed log-softmax of the continuation tokens from one unbatched forward over context + continuation."""
    context_ids = handle.tokenizer(item.context).input_ids
    whole = handle.tokenizer(item.context + TARGET_DELIMITER + choice).input_ids
    assert whole[: len(context_ids)] == context_ids
    logits = handle.model(input_ids=torch.tensor([whole])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(logp[t - 1, whole[t]].item() for t in range(len(context_ids), len(whole)))


@pytest.mark.model
@pytest.mark.parametrize("fixture", [pytest.param("gemma_fp32", marks=pytest.mark.slow), "smollm_fp32"])  # gemma: full suite
def test_choice_logprobs_match_a_plain_forward(request, fixture):
    handle = request.getfixturevalue(fixture)
    items = load_mc_task()
    picked = [items[0], items[12], items[24], items[31]]  # one per topic, short and long choices
    result = mc_accuracy(handle, picked, batch_size=5)  # batches mix items of different lengths
    if fixture == "gemma_fp32":
        context_ids, _ = encode_pair(handle.tokenizer, picked[0].context, " 12")
        assert context_ids[0] == handle.tokenizer.bos_token_id  # Gemma is scored after <bos>
    with torch.inference_mode():
        for item, row in zip(picked, result["per_item"]):
            expected = [_plain_logprob(handle, item, choice) for choice in item.choices]
            assert row["logprobs"] == pytest.approx(expected, abs=1e-3)
            assert row["pred"] == max(range(4), key=lambda j: expected[j])
    assert result["n"] == 4 and 0.0 <= result["acc"] <= 1.0


@pytest.mark.model
@pytest.mark.slow  # fast tier: a sibling test covers the same code; this one in the full suite
def test_accuracy_matches_lm_eval(smollm_fp32, monkeypatch):
    if importlib.util.find_spec("lm_eval") is None:
        pytest.skip("lm-eval is not installed (pip install lm-eval)")
    from workbench.mc_eval import lm_eval_run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(os.path.dirname(__file__))  # the task's data path must not depend on the working directory
    limit = 10
    ours = mc_accuracy(smollm_fp32, load_mc_task()[:limit])
    theirs = lm_eval_run(smollm_fp32, [LM_EVAL_TASK], limit=limit, log_samples=True)
    metrics = theirs["results"][LM_EVAL_TASK]
    assert metrics["acc,none"] == ours["acc"]
    assert metrics["acc_norm,none"] == ours["acc_norm"]
    samples = sorted(theirs["samples"][LM_EVAL_TASK], key=lambda s: s["doc_id"])
    assert len(samples) == limit
    for sample, row in zip(samples, ours["per_item"]):
        assert [resp[0][0] for resp in sample["resps"]] == pytest.approx(row["logprobs"], abs=1e-3)


def test_lm_eval_run_says_how_to_install_it(monkeypatch):
    from workbench.mc_eval import lm_eval_run

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` fail as if it were not installed
    with pytest.raises(WorkbenchError, match="pip install lm-eval"):
        lm_eval_run(None, [LM_EVAL_TASK])


@pytest.mark.slow
def test_lm_eval_run_rejects_an_unknown_task():
    if importlib.util.find_spec("lm_eval") is None:
        pytest.skip("lm-eval is not installed (pip install lm-eval)")
    from workbench.mc_eval import lm_eval_run

    with pytest.raises(WorkbenchError, match="knows no task 'no_such_task'"):
        lm_eval_run(None, ["no_such_task"])
