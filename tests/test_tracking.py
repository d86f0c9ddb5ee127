"""Runs people can track: report_to (accelerate's trackers: TensorBoard, and trackio where it is installed) and the
rollout dump rollouts.jsonl."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.training.configs import config_from_dict
from workbench.training.tracking import TABLE_COLUMNS, RolloutLog, markdown_table, read_rollouts, tracker_names
from workbench.training.trainer import read_metrics


def _rlp(tiny_model_dir, tmp_path, **extra):
    return config_from_dict(
        {
            **dict(
                trainer="rlp",
                model=str(tiny_model_dir),
                output_dir=str(tmp_path / "rlp"),
                max_steps=2,
                docs_per_step=1,
                positions_per_doc=2,
                G=2,
                thought_tokens=4,
                min_thought_tokens=1,
                max_doc_tokens=64,
                eval_data="",
                checkpoint_every=100,
                save_optimizer=False,
                progress=False,
            ),
            **extra,
        }
    )


def test_tracker_names():
    assert tracker_names("none") == [] and tracker_names(["none"]) == [] and tracker_names("") == []
    assert tracker_names("tensorboard") == ["tensorboard"] and tracker_names(["TensorBoard"]) == ["tensorboard"]
    with pytest.raises(WorkbenchError, match="unknown tracker nope; use none, all or any of .*tensorboard"):
        tracker_names("nope")
    with pytest.raises(WorkbenchError, match="unknown tracker"):  # checked with the config, before a model loads
        config_from_dict({"trainer": "rlp", "report_to": ["tensorboard", "nope"]})


def test_markdown_table_escapes_cells():
    table = markdown_table(["a", "b"], [["x|y", "one\ntwo"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | one⏎two |"]


def test_rollout_log_caps_and_truncates(tmp_path):
    notes = []
    log = RolloutLog(tmp_path / "rollouts.jsonl", max_mb=0.00021, note=notes.append)  # 210 bytes
    record = {"step": 1, "thought": "x" * 40}  # 67 bytes a line: three fit
    assert log.append([record, record]) == 2
    assert log.append([{**record, "step": 2}] * 3) == 1  # the fourth record would pass 210 bytes
    assert log.full and len(notes) == 1 and "rollouts_max_mb" in notes[0]
    assert log.append([record]) == 0 and (tmp_path / "rollouts.jsonl").stat().st_size == 201
    assert [r["step"] for r in read_rollouts(tmp_path)] == [1, 1, 2]
    log.truncate_after(1)
    assert [r["step"] for r in read_rollouts(tmp_path)] == [1, 1]
    off = RolloutLog(tmp_path / "off.jsonl", max_mb=0)
    assert off.append([record]) == 0 and not (tmp_path / "off.jsonl").exists()


def test_rlp_run_dumps_every_thought_and_reports_to_tensorboard(tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (the `track` extra)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from workbench.training.launch import trainer_for

    trainer = trainer_for(_rlp(tiny_model_dir, tmp_path, report_to="tensorboard", rollout_table_rows=3))
    trainer.train()
    run = trainer.run_dir
    rows = {r["step"]: r for r in read_metrics(run)}
    records = read_rollouts(run)
    assert [r["step"] for r in records] == [1] * 4 + [2] * 4  # 2 positions x G 2 per step
    batch = trainer.last_batch  # step 2's numbers, straight from the trainer
    last = [r for r in records if r["step"] == 2]
    thoughts = [th for g in batch["thoughts"] for th in g]
    assert [r["thought_ids"] for r in last] == [list(th.ids) for th in thoughts]
    assert [r["thought"] for r in last] == [th.text for th in thoughts]
    assert [r["length"] for r in last] == [th.length for th in thoughts]
    assert [r["closed_by"] for r in last] == [th.closed_by for th in thoughts]
    assert [r["position"] for r in last] == [th.position for th in thoughts]
    for g, group in enumerate(batch["thoughts"]):
        for k, th in enumerate(group):
            r = last[2 * g + k]
            # RLP's reward: the with-thought score over the teacher's no-think score; content gain over the empty thought
            assert r["reward"] == pytest.approx(th.logp_with_thought - batch["teacher_logp"][g], abs=1e-9)
            assert r["reward"] == pytest.approx(r["info_gain"], abs=1e-12)
            assert r["content_gain"] == pytest.approx(th.logp_with_thought - batch["empty_logp"][g], abs=1e-9)
        advantages = [last[2 * g + k]["advantage"] for k in range(2)]
        assert sum(advantages) == pytest.approx(0.0, abs=1e-9)  # group-relative
    ids = trainer.train_ids[batch["contexts"][0].doc]
    r = last[0]
    assert r["target"] == trainer.tokenizer.decode([ids[r["position"]]])
    assert trainer.tokenizer.decode(ids[: r["position"]]).endswith(r["context_tail"])
    assert r["doc"].startswith("corpus:train#")
    assert np.mean([r["reward"] for r in last]) == pytest.approx(rows[2]["reward_mean"], abs=1e-9)

    # TensorBoard holds the same scalars as metrics.jsonl, at the same steps, and a table of 3 thoughts per step
    events = run / "tracking" / trainer.config.run_name  # (add_hparams writes the config into a subfolder of it)
    assert len(list(events.glob("events.out.tfevents.*"))) == 1
    acc = EventAccumulator(str(events), size_guidance={"tensors": 0, "scalars": 0}).Reload()
    scalars = {e.step: e.value for e in acc.Scalars("reward_mean")}
    assert scalars == pytest.approx({s: rows[s]["reward_mean"] for s in (1, 2)}, abs=1e-6)
    texts = acc.Tensors("rollouts/thoughts/text_summary")
    assert [t.step for t in texts] == [1, 2]
    table = texts[-1].tensor_proto.string_val[0].decode()
    assert table.count("\n") == 2 + 3 - 1 and last[0]["context_tail"].replace("\n", "⏎")[:10] in table
    trainer.close()


def _trackio_logs(db):
    """What trackio wrote to a project's database (sqlite): {run name: {step: metrics}} (a step logged twice, its
    scalars and then its thought table, merged) and {run name: config}."""
    con = sqlite3.connect(db)
    try:
        metrics = con.execute("SELECT run_name, step, metrics FROM metrics ORDER BY id").fetchall()
        configs = con.execute("SELECT run_name, config FROM configs").fetchall()
    finally:
        con.close()
    runs = {}
    for run_name, step, values in metrics:
        runs.setdefault(run_name, {}).setdefault(step, {}).update(json.loads(values))
    return runs, {run_name: json.loads(config) for run_name, config in configs}


@pytest.mark.skipif(
    importlib.util.find_spec("trackio") is None, reason="trackio is not installed (pip install trackio)"
)
def test_rlp_run_reports_to_trackio(tiny_model_dir, tmp_path, monkeypatch):
    from workbench.training.launch import trainer_for

    monkeypatch.delenv("TRACKIO_DIR", raising=False)  # the run chooses: <run>/tracking/trackio
    trainer = trainer_for(_rlp(tiny_model_dir, tmp_path, report_to="trackio", rollout_table_rows=3))
    trainer.train()
    run = trainer.run_dir
    rows = {r["step"]: r for r in read_metrics(run)}
    records = read_rollouts(run)
    assert "TRACKIO_DIR" not in os.environ  # put back as it was when the run finished

    # trackio's database lies in the run (project = the run's name) and holds metrics.jsonl's scalars at their steps
    db = run / "tracking" / "trackio" / f"{trainer.config.run_name}.db"
    assert db.is_file()
    runs, configs = _trackio_logs(db)
    assert len(runs) == 1
    (steps,) = runs.values()
    assert sorted(steps) == [0, 1, 2]
    assert {s: steps[s]["reward_mean"] for s in (1, 2)} == pytest.approx(
        {s: rows[s]["reward_mean"] for s in (1, 2)}, abs=1e-9
    )
    assert steps[2]["flops"] == pytest.approx(rows[2]["flops"])
    # and a table of each step's first 3 thoughts, with the table's columns
    for s in (1, 2):
        table = steps[s]["rollouts/thoughts"]
        assert table["_type"] == "trackio.table"
        first = [r for r in records if r["step"] == s][:3]
        assert [list(row) for row in table["_value"]] == [list(TABLE_COLUMNS)] * 3
        assert [row["thought"] for row in table["_value"]] == [r["thought"] for r in first]
        assert [row["position"] for row in table["_value"]] == [r["position"] for r in first]
        assert [row["reward"] for row in table["_value"]] == [round(r["reward"], 3) for r in first]
    (config,) = configs.values()
    assert config["trainer"] == "rlp" and config["G"] == 2 and config["report_to"] == "trackio"
    trainer.close()

    # a second run in the same process (a notebook) gets its own database: trackio reads TRACKIO_DIR once, on import
    second = trainer_for(
        _rlp(tiny_model_dir, tmp_path, output_dir=str(tmp_path / "rlp2"), report_to="trackio", max_steps=1)
    )
    second.train()
    second_runs, _ = _trackio_logs(second.run_dir / "tracking" / "trackio" / f"{second.config.run_name}.db")
    assert [sorted(steps) for steps in second_runs.values()] == [[0, 1]]
    assert _trackio_logs(db)[0] == runs  # the first run's database is as it was
    second.close()


def test_rollouts_off_and_resume_fields_are_not_in_the_fingerprint(tiny_model_dir, tmp_path):
    a = _rlp(tiny_model_dir, tmp_path)
    b = _rlp(tiny_model_dir, tmp_path, report_to="tensorboard", rollouts_max_mb=0, rollout_table_rows=1)
    assert a.fingerprint() == b.fingerprint()  # where a run is shown does not change its numbers (or a cache key)
    from workbench.training.launch import trainer_for

    trainer = trainer_for(_rlp(tiny_model_dir, tmp_path, rollouts_max_mb=0, max_steps=1))
    trainer.train()
    assert not (trainer.run_dir / "rollouts.jsonl").exists()
    with pytest.raises(WorkbenchError, match="no rollouts.jsonl"):
        read_rollouts(trainer.run_dir)
    trainer.close()
    with pytest.raises(WorkbenchError, match="rollouts_max_mb must be a number >= 0"):
        config_from_dict({"trainer": "rlp", "rollouts_max_mb": -1})
    assert json.loads((trainer.run_dir / "summary.json").read_text())["steps"] == 1


def _records():
    rng = np.random.default_rng(0)
    return [
        {
            "step": s,
            "doc": "corpus:train#math-01",
            "position": 10 + k,
            "context_tail": "2 + 2 =",
            "target": " 4",
            "index": k % 2,
            "thought": f"thought {s}.{k}",
            "thought_ids": [1, 2],
            "reward": float(rng.normal()),
            "info_gain": 0.0,
            "content_gain": float(rng.normal()),
            "advantage": float(rng.normal()),
            "length": int(rng.integers(1, 9)),
            "closed_by": "marker",
        }
        for s in (1, 2, 3)
        for k in range(4)
    ]


def test_rollout_figure_pages_through_steps():
    from workbench.rollout_browser import rollout_figure

    records = _records()
    fig = rollout_figure(records)
    scatters = [t for t in fig.data if t.type == "scatter"]
    tables = [t for t in fig.data if t.type == "table"]
    assert len(scatters) == 3 and len(tables) == 4  # a table of all steps, then one per step
    assert sorted(x for t in scatters for x in t.y) == sorted(r["reward"] for r in records)
    thoughts_of_step_2 = tables[2].cells.values[3]
    assert sorted(thoughts_of_step_2) == sorted(r["thought"] for r in records if r["step"] == 2)
    slider = fig.layout.sliders[0]
    assert [s.label for s in slider.steps] == ["all", "1", "2", "3"]
    assert slider.steps[2].args[0]["visible"] == [False, True, False, False, False, True, False]
    assert slider.steps[0].args[0]["visible"] == [True, True, True, True, False, False, False]
    rewards_of_all = list(tables[0].cells.values[4])
    assert rewards_of_all == sorted(rewards_of_all, reverse=True)  # the best thoughts first


def test_rollout_browser_filters():
    pytest.importorskip("ipywidgets")
    from workbench.rollout_browser import RolloutBrowser

    records = _records()
    browser = RolloutBrowser(records)
    assert len(browser.selected()) == 12
    browser.steps.value = (2, 2)
    browser.reward.value = (0.0, browser.reward.max)
    chosen = browser.selected()
    assert set(chosen["step"]) <= {2} and (chosen["reward"] >= 0).all()
    assert len(chosen) == sum(r["step"] == 2 and r["reward"] >= 0 for r in records)
    assert browser.count.value.startswith(f"{len(chosen)} of 12")
