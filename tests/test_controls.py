"""The null control (advantages shuffled within groups), per-answer evaluation records, and paired comparisons of runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.training.configs import config_from_dict
from workbench.training.rl_math import shuffled_within_groups


@pytest.fixture(scope="module")
def _config(tiny_rlp_config):
    """One step of three positions with four thoughts each."""
    return lambda out, **extra: tiny_rlp_config(out, **{"positions_per_doc": 3, "G": 4, **extra})


def test_shuffling_keeps_each_groups_values_and_breaks_their_order():
    adv = torch.arange(40, dtype=torch.float64).reshape(10, 4)
    out = shuffled_within_groups(adv, torch.Generator().manual_seed(0))
    assert torch.equal(out.sort(dim=-1).values, adv)  # the same values in every group
    assert not torch.equal(out, adv)
    assert torch.equal(out, shuffled_within_groups(adv, torch.Generator().manual_seed(0)))  # a seed's own permutation


def test_an_unknown_control_is_one_line():
    with pytest.raises(WorkbenchError, match="control must be one of"):
        config_from_dict(dict(trainer="rlp", model="gemma3-270m", control="shuffle"))
    cfg = config_from_dict(dict(trainer="rlp", model="gemma3-270m", control="shuffled_advantages"))
    assert any(d.startswith("control shuffled_advantages") for d in cfg.deviations)
    # a config without a control keeps the fingerprint it had before the field existed
    plain = config_from_dict(dict(trainer="rlp", model="gemma3-270m"))
    assert plain.fingerprint() == config_from_dict(dict(trainer="rlp", model="gemma3-270m", control="")).fingerprint()
    assert plain.fingerprint() != cfg.fingerprint()


def test_the_control_samples_and_scores_as_rlp_and_permutes_the_advantages(_config, tmp_path):
    """Same seed: the control's first step draws the same contexts and thoughts and gets the same rewards as RLP's (no
    update has happened yet); its advantages are RLP's, permuted within each group; run.json labels it a control."""
    from workbench.training.launch import trainer_for

    rlp = trainer_for(_config(tmp_path / "rlp"))
    rlp.train_step(1)
    control = trainer_for(_config(tmp_path / "control", control="shuffled_advantages"))
    control.train_step(1)
    a, b = rlp.last_batch, control.last_batch
    assert [[th.ids for th in g] for g in a["thoughts"]] == [[th.ids for th in g] for g in b["thoughts"]]
    assert torch.allclose(a["rewards"], b["rewards"])
    assert torch.allclose(a["advantages"].sort(dim=-1).values, b["advantages"].sort(dim=-1).values)
    assert not torch.allclose(a["advantages"], b["advantages"])
    run = json.loads((control.run_dir / "run.json").read_text())
    assert (
        run["control"] == "shuffled_advantages"
        and json.loads((rlp.run_dir / "run.json").read_text())["control"] is None
    )
    rlp.close()
    control.close()


def test_compare_runs_pairs_the_same_answers(_config, tmp_path):
    """Two runs evaluated on the thinking corpus's held-out answers: every evaluation writes one record per answer; the
    paired difference and its SE are the plain mean and SE of the per-answer differences; the CLI prints the table."""
    from workbench.cli import main
    from workbench.run_compare import compare_runs, evaluation_records, seed_table
    from workbench.training.launch import train

    runs = {}
    for name, extra in (("rlp", {}), ("control", {"control": "shuffled_advantages"})):
        summary = train(
            _config(
                tmp_path / name,
                max_steps=2,
                eval_every=2,
                eval_data="thinking:eval",
                eval_positions="marked",
                eval_docs=2,
                eval_G=2,
                train_data="thinking:train",
                train_positions="marked",
                learning_rate=5e-2,
                max_doc_tokens=160,
                **extra,
            )
        )
        runs[name] = summary["run_dir"]
    step, a = evaluation_records(runs["rlp"])
    _, b = evaluation_records(runs["control"])
    assert step == 2 and len(a) == len(b) >= 4 and {r["doc"] for r in a} == {0, 1}
    assert evaluation_records(runs["rlp"], 0)[1][0]["position"] == a[0]["position"]  # step 0 too, same answers

    table = compare_runs(runs["rlp"], runs["control"])
    d = np.array([x["thinking_right"] - y["thinking_right"] for x, y in zip(a, b)])
    row = table.loc["thinking_right"]
    assert row["A - B"] == pytest.approx(d.mean()) and row["answers"] == len(d)
    assert (math.isnan(row["SE"]) and d.std() == 0) or row["SE"] == pytest.approx(d.std(ddof=1) / math.sqrt(len(d)))
    # the run's own metrics agree with its records, and carry a standard error
    last = [r for r in map(json.loads, open(f"{runs['rlp']}/metrics.jsonl")) if "eval_loss" in r][-1]
    assert last["eval_answer_accuracy_no_think"] == pytest.approx(np.mean([r["no_think_right"] for r in a]))
    assert "eval_answer_accuracy_thinking_se" in last and last["eval_answers"] == len(a)

    assert main(["compare-runs", runs["rlp"], runs["control"], "--json", str(tmp_path / "t.json")]) == 0
    assert json.loads((tmp_path / "t.json").read_text())[0]["metric"] == "thinking_right"
    seeds = seed_table({"RLP": [runs["rlp"]], "control": [runs["control"]]})
    assert seeds.loc["RLP", "seeds"] == 1 and "eval_answer_accuracy_thinking" in seeds
    with pytest.raises(WorkbenchError, match="was not evaluated at step 1"):
        evaluation_records(runs["rlp"], 1)
    # every evaluated answer names its problem family; each thought its style and how it ended
    from workbench.data import load_thinking_corpus
    from workbench.run_compare import endings_table, evaluated_thoughts

    names = {f for d in load_thinking_corpus("eval")[:2] for f in d.families}
    assert {r["family"] for r in a} <= names and all(r["family"] for r in a)
    assert all(len(r["styles"]) == len(r["closed_by"]) == len(r["right"]) == 2 for r in a)
    table = endings_table(evaluated_thoughts(runs["rlp"]))
    assert table["thoughts"].sum() == 2 * len(a)
    assert ((table["by_marker"] + table["by_eos"] + table["at_budget"]) - 1).abs().max() < 1e-9
    assert set(table.index.get_level_values("family")) <= names


def test_the_arena_takes_a_designs_control():
    from workbench.arena import design_of, load_arena

    assert design_of("rlp+control") == ("rlp", "shuffled_advantages") and design_of("nover") == ("nover", "")
    arena_file = Path(__file__).resolve().parents[1] / "configs" / "arena.yaml"
    config, names = load_arena(arena_file, designs=["rlp", "rlp+control", "nover+control"])
    assert names == ["rlp", "rlp+control", "nover+control"]
    with pytest.raises(WorkbenchError, match="unknown design"):
        load_arena(arena_file, designs=["rlp", "nope+control"])


def test_a_matched_run_reads_step_0_evaluation_from_its_match(tiny_model_dir, _config, tmp_path):
    """NTP matched to an RLP run from the same model, dtype, machine and evaluation settings copies that run's step-0
    evaluation (its numbers, per-answer records and film frame), and those are what it would have measured itself;
    under other settings it measures its own."""
    from workbench.training.launch import train, trainer_for
    from workbench.training.trainer import read_metrics

    evaluation = dict(
        eval_data="thinking:eval",
        eval_positions="marked",
        eval_docs=1,
        eval_G=2,
        eval_thought_tokens=4,
        max_doc_tokens=64,
    )
    rlp = train(_config(tmp_path / "rlp", **evaluation))["run_dir"]
    # with dtype "auto" the reason quotes a timed probe ("bf16 matmul 2.74x float32's speed"), different every run:
    # the same choices on the same machine still match
    info = json.loads((Path(rlp) / "run.json").read_text())
    info["hardware"] = {**info["hardware"], "dtype_reason": "timed probe: bf16 matmul 2.74x float32's speed"}
    (Path(rlp) / "run.json").write_text(json.dumps(info))
    ntp_cfg = config_from_dict(
        dict(
            trainer="ntp",
            model=str(tiny_model_dir),
            output_dir=str(tmp_path / "ntp"),
            max_steps=1,
            docs_per_step=1,
            checkpoint_every=100,
            save_optimizer=False,
            progress=False,
            match_run=rlp,
            match="flops",
            **evaluation,
        )
    )
    trainer = trainer_for(ntp_cfg)
    own = trainer.evaluate()  # what NTP measures itself at step 0
    trainer.train()
    trainer.close()
    copied = read_metrics(tmp_path / "ntp")[0]
    assert copied["step"] == 0 and copied["time_eval_s"] == 0.0
    for key in ("eval_loss", "eval_reward_mean", "eval_answer_accuracy_thinking", "eval_answer_accuracy_no_think"):
        assert copied[key] == own[key] == read_metrics(rlp)[0][key], key
    assert (tmp_path / "ntp" / "eval" / "step-000000.jsonl").read_text() == (
        Path(rlp) / "eval" / "step-000000.jsonl"
    ).read_text()
    assert "step 0 evaluation read from" in (tmp_path / "ntp" / "train.log").read_text()

    other = config_from_dict({**ntp_cfg.to_dict(), "output_dir": str(tmp_path / "ntp2"), "eval_G": 3})
    train(other)
    assert "step 0 evaluation read from" not in (tmp_path / "ntp2" / "train.log").read_text()


def test_frozen_embeddings_are_a_labelled_option_of_every_trainer(tiny_model_dir, _config, tmp_path):
    """train_embeddings: false keeps the token embedding and LM head as they were while the layers learn; RLP labels it
    a deviation; a config that leaves it at its default keeps its old fingerprint (the warm start's key included)."""
    from workbench.training.launch import trainer_for

    plain = config_from_dict(dict(trainer="rlp", model="gemma3-270m"))
    assert (
        plain.fingerprint()
        == config_from_dict(dict(trainer="rlp", model="gemma3-270m", train_embeddings=True)).fingerprint()
    )
    frozen_cfg = config_from_dict(dict(trainer="rlp", model="gemma3-270m", train_embeddings=False))
    assert frozen_cfg.fingerprint() != plain.fingerprint()
    assert any(d.startswith("train_embeddings false") for d in frozen_cfg.deviations)
    for trainer_name in ("rlp", "ntp"):
        extra = {"learning_rate": 5e-2}
        if trainer_name == "rlp":
            cfg = _config(tmp_path / trainer_name, train_embeddings=False, **extra)
        else:
            cfg = config_from_dict(
                dict(
                    trainer="ntp",
                    model=str(tiny_model_dir),
                    output_dir=str(tmp_path / "ntp"),
                    max_steps=1,
                    docs_per_step=1,
                    max_doc_tokens=64,
                    eval_data="",
                    checkpoint_every=100,
                    save_optimizer=False,
                    progress=False,
                    train_embeddings=False,
                    **extra,
                )
            )
        trainer = trainer_for(cfg)
        before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
        trainer.train_step(1)
        after = dict(trainer.policy.named_parameters())
        embed = next(n for n in before if "embed_tokens" in n)
        assert torch.equal(after[embed], before[embed]), trainer_name
        assert any(not torch.equal(after[n], before[n]) for n in before if n != embed), trainer_name
        trainer.close()


def test_the_measured_experiments_read_as_sentences_and_a_figure():
    """The experiments the notebooks and README quote (benchmarks/results): every RLP seed's paired difference from
    NTP (either loss), recomputed here from the per-answer records, is in the sentences; one trace per arm."""
    from workbench.run_compare import experiment_markdown, measured_experiments
    from workbench.training_viz import arms_figure

    experiments = measured_experiments()
    assert all("ntp" in groups and {"rlp", "rlptoken"} & set(groups) for groups in experiments.values())
    text = experiment_markdown(experiments)
    for groups in experiments.values():
        for run in groups.get("rlp", []) + groups.get("rlptoken", []):
            ntp = run.parent / ("ntp-s" + run.name.rsplit("-s", 1)[1])
            if not ntp.exists():
                continue
            last = lambda r: sorted((r / "eval").glob("step-*.jsonl"))[-1]  # noqa: E731
            a = {(x["doc"], x["position"]): x["thinking_right"] for x in map(json.loads, last(run).open())}
            b = {(x["doc"], x["position"]): x["thinking_right"] for x in map(json.loads, last(ntp).open())}
            d = np.array([a[k] - b[k] for k in a])
            assert f"{100 * d.mean():+.0f} ± {100 * d.std(ddof=1) / len(d) ** 0.5:.0f}" in text
    fig = arms_figure(experiments)
    assert len(fig.data) == sum(len(groups) for groups in experiments.values())


def test_the_budget_ablation_reads_as_sentences_and_a_figure():
    """The thought-budget ablation the notebooks and README quote: each run's start, end and paired change, recomputed
    here from its per-answer records, are in the sentences beside the paper's Table S.1; two traces of ours, two of
    the paper's."""
    from workbench.run_compare import PAPER_BUDGET_ABLATION, budget_markdown, measured_budget_ablation
    from workbench.training_viz import budget_figure

    table = measured_budget_ablation()
    assert {16, 64} <= set(table["budget"])
    text = budget_markdown(table)
    root = Path(__file__).resolve().parents[1]
    from workbench.run_compare import MEASURED_BUDGET_ABLATION

    for run in sorted((root / MEASURED_BUDGET_ABLATION).glob("budget*-s*")):
        files = sorted((run / "eval").glob("step-*.jsonl"))
        first, last = (
            {(x["doc"], x["position"]): x["thinking_right"] for x in map(json.loads, f.open())}
            for f in (files[0], files[-1])
        )
        d = np.array([last[k] - first[k] for k in last])
        assert (
            f"{np.mean(list(first.values())):.0%} → {np.mean(list(last.values())):.0%} ({100 * d.mean():+.0f} ± {100 * d.std(ddof=1) / len(d) ** 0.5:.0f} points"
            in text
        )
    assert all(f"{b} → {v:.2f}" in text for b, v in PAPER_BUDGET_ABLATION.items())
    assert len(budget_figure(table).data) == 4
