"""Training on the real bundled models: the loss pass against plain forwards, the guards, the wiring
check (the objective can be optimised at all) and resume after SIGKILL."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import logp_next

from workbench.data import tokenize
from workbench.engine.sampler import ThoughtSampler, _Row
from workbench.engine.thought import SamplingConfig, Thought, ThoughtTemplate
from workbench.errors import WorkbenchError
from workbench.training.configs import config_from_dict, load_config
from workbench.training.policy_logps import TrainRow, fed_tokens, pack_document, packed_token_logps, token_logps
from workbench.training.rl_math import clipped_surrogate, normalise_loss
from workbench.training.rlp_trainer import loss_chunks, train_row
from workbench.training.trainer import TIMING_KEYS, read_metrics

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- rows and log-probs


def _thought(ids, closed_by, hidden=0, eos=None, position=3, stop=None):
    doc = [10, 11, 12, 13, 14]
    if stop is None:
        stop = {"marker": [91, 92], "eos": [eos] if eos is not None else []}.get(closed_by, [])
    return Thought(
        position, 0, ids, "", closed_by, doc[:position] + [90] + ids + [91, 92], -1.0, hidden, eos, stop_ids=stop
    )


def test_train_row_trains_the_policys_own_actions():
    open_ids = [90]
    marker = train_row(_thought([5, 6], "marker"), open_ids, 1.5, True)
    assert marker.targets == [5, 6, 91, 92] and marker.inputs == [10, 11, 12, 90, 5, 6, 91]
    assert marker.advantage == 1.5
    eos = train_row(_thought([5], "eos", eos=1), open_ids, 0.0, True)
    assert eos.targets == [5, 1] and eos.inputs == [10, 11, 12, 90, 5]
    budget = train_row(_thought([5, 6], "budget"), open_ids, 0.0, True)
    assert budget.targets == [5, 6]  # the appended marker was not sampled
    # the policy spelled the marker with other tokens: those are trained, in the context they were sampled in,
    # never the canonical [91, 92] it did not sample - also when nothing had to be hidden (one token held it all)
    respelled = train_row(_thought([5], "marker", hidden=2, stop=[93, 94, 95]), open_ids, 0.0, True)
    assert respelled.targets == [5, 93, 94, 95] and respelled.inputs == [10, 11, 12, 90, 5, 93, 94]
    one_token = train_row(_thought([5], "marker", hidden=0, stop=[96]), open_ids, 0.0, True)
    assert one_token.targets == [5, 96]
    assert train_row(_thought([], "eos", eos=1), open_ids, 0.0, True).targets == [1]
    assert train_row(_thought([], "eos", eos=1), open_ids, 0.0, False) is None
    assert train_row(_thought([5], "marker"), open_ids, 0.0, False).targets == [5]


@pytest.mark.model
def test_sampler_records_the_marker_spelling_it_sampled(smollm_fp32):
    """A closing marker written with other tokens than the canonical ones: the sampler keeps those tokens as the
    thought's stop_ids (what train_row trains), and the canonical ids only when they were written."""
    tok = smollm_fp32.tokenizer
    sampler = ThoughtSampler(smollm_fp32, ThoughtTemplate(), SamplingConfig(G=1, thought_tokens=16))
    close = sampler.close_ids
    spelled = [tok.convert_tokens_to_ids(c) for c in ("<", "/", "think", ">")]
    spelled = [i for i in spelled if i is not None and i != tok.unk_token_id]
    assert tok.decode(spelled) == "</think>" and spelled != close, (spelled, close)
    word = tok.encode(" So", add_special_tokens=False)

    def run(tokens):
        row = _Row(5, 0)
        slot_pos, next_pos = torch.zeros((1, 64), dtype=torch.long), torch.tensor([20])
        for k, token in enumerate(tokens):
            if row.thought is None:
                sampler._accept(row, token, slot_pos, next_pos, 0, 30 + k)
        return row

    canonical = run(word + close)
    assert canonical.thought == word and canonical.stop == close
    other = run(word + spelled)
    assert other.thought == word and other.stop == spelled and other.closed_by == "marker"
    eos = run(word + [tok.eos_token_id])
    assert eos.closed_by == "eos" and eos.stop == [tok.eos_token_id]


@pytest.mark.model
def test_token_logps_equal_plain_forwards(gemma_fp32, math_doc):
    """Left-padded batched log-probs == one plain forward per sequence (fp32, Gemma 3 270M)."""
    ids = tokenize(gemma_fp32.tokenizer, math_doc.text)
    rows = [
        TrainRow(inputs=ids[:20], targets=ids[12:21], advantage=0.0),
        TrainRow(inputs=ids[:45], targets=ids[44:46], advantage=0.0),
        TrainRow(inputs=ids[:7], targets=ids[3:8], advantage=0.0),
    ]
    for temperature in (1.0, 0.7):
        with torch.no_grad():
            logp, mask = token_logps(gemma_fp32.model, rows, temperature, pad_id=0)
        for i, row in enumerate(rows):
            got = logp[i][mask[i]].tolist()
            assert len(got) == len(row.targets)
            seq = row.inputs + [row.targets[-1]]
            start = len(seq) - len(row.targets)
            for j, target in enumerate(row.targets):
                context = seq[: start + j]
                if temperature == 1.0:
                    ref = logp_next(gemma_fp32.model, context, target)
                else:
                    with torch.no_grad():
                        logits = gemma_fp32.model(torch.tensor([context])).logits[0, -1].float() / temperature
                    ref = float(torch.log_softmax(logits, -1)[target])
                assert got[j] == pytest.approx(ref, abs=2e-3), (i, j)


def test_loss_chunks_keep_documents_apart():
    rows = [TrainRow([1, 2], [3], 0.0, doc=d, position=1) for d in (0, 0, 0, 1, 1, 2)]
    assert [[r.doc for r in c] for c in loss_chunks(rows, 2, True)] == [[0, 0], [0], [1, 1], [2]]
    assert [[r.doc for r in c] for c in loss_chunks(rows, 4, False)] == [[0, 0, 0, 1], [1, 2]]
    # FLOPs of the loss pass: each document's prefix once (up to its last position) when packed
    doc_rows = [
        TrainRow(list(range(10)) + [90, 5, 6], [5, 6, 91], 0.0, doc=0, position=10),
        TrainRow(list(range(4)) + [90], [7], 0.0, doc=0, position=4),
    ]
    assert fed_tokens(doc_rows, packed=False) == 13 + 5
    assert fed_tokens(doc_rows, packed=True) == 10 + 3 + 1
    assert len(pack_document(doc_rows).input_ids) == fed_tokens(doc_rows, packed=True)
    with pytest.raises(ValueError, match="prefix"):
        pack_document(
            [TrainRow([1, 2, 3], [4], 0.0, doc=0, position=2), TrainRow([1, 9, 3], [4], 0.0, doc=0, position=2)]
        )


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.parametrize("window", [None, 24])
def test_packed_logps_equal_one_row_per_thought(gemma_fp32, math_doc, window):
    """The packed loss pass (each document's prefix once, a mask per thought) == one row per thought: log-probs
    and gradients, on real thoughts from Gemma 3 270M (fp32), two documents, three positions each. With a
    24-token sliding window the prefix is longer than the window, so the packed mask must apply it as the
    unpacked sequence does."""
    model, tok = gemma_fp32.model, gemma_fp32.tokenizer
    template = ThoughtTemplate()
    open_ids = template.open_ids(tok)
    full = tokenize(tok, math_doc.text)
    rows = []
    for doc, ids in enumerate([full, full[7:]]):
        thoughts = ThoughtSampler(gemma_fp32, template, SamplingConfig(G=2, thought_tokens=6, seed=doc)).sample(
            ids, [9, 40, 71]
        )
        rows += [r for th in thoughts if (r := train_row(th, open_ids, 1.0, True, doc)) is not None]
    assert len({r.doc for r in rows}) == 2 and len({r.position for r in rows}) == 3
    saved_window = model.config.sliding_window
    model.requires_grad_(True)
    try:
        if window:
            model.config.sliding_window = window
        grads = []
        for run in (lambda: token_logps(model, rows, 0.7, pad_id=0), lambda: packed_token_logps(model, rows, 0.7)):
            model.zero_grad(set_to_none=True)
            logp, mask = run()
            (logp * torch.linspace(0.5, 1.5, logp.shape[1])).sum().backward()  # weights differ per column
            grads.append(
                (logp.detach(), mask, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
            )
    finally:
        model.config.sliding_window = saved_window
        model.zero_grad(set_to_none=True)
        model.requires_grad_(False)
    (plain, plain_mask, plain_grad), (packed, packed_mask, packed_grad) = grads
    assert torch.equal(plain_mask, packed_mask)
    torch.testing.assert_close(packed, plain, atol=1e-3, rtol=0)
    assert plain_grad.keys() == packed_grad.keys()
    # per tensor, |difference| / |gradient| (Frobenius). Measured: 0.9e-4 (no window) and 4.5e-4 (window 24); the
    # row-per-thought pass itself moves by 2-3e-4 when its rows run one at a time instead of batched (fp32 sums
    # in another order, Gemma's large activations). A window off by one token gives 3.3 (log-probs off by 0.8).
    worst = max(float((packed_grad[n] - g).norm() / g.norm()) for n, g in plain_grad.items())
    assert worst < 2e-3, worst


@pytest.mark.model
def test_sparse_embedding_gradient_equals_the_dense_one(math_doc):
    """The trainer turns the (tied) input embedding's gradient sparse on one process; the accumulated gradient of the
    tied weight, and every other gradient, must equal the dense computation."""
    from workbench.models import load_model

    handle = load_model("smollm2-135m", dtype="float32")  # tied embeddings, like Gemma; its own copy: grads change
    model = handle.model
    model.requires_grad_(True)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    ids = torch.tensor([tokenize(handle.tokenizer, math_doc.text, 48)])

    def grads(sparse: bool) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model.get_input_embeddings().sparse = sparse
        logits = model(input_ids=ids, logits_to_keep=torch.arange(ids.shape[1] - 1)).logits
        torch.nn.functional.cross_entropy(logits[0], ids[0, 1:]).backward()
        out = {}
        for name, p in model.named_parameters():
            g = p.grad
            out[name] = (g.to_dense() if g.is_sparse else g).clone()
        return out

    dense, sparse = grads(False), grads(True)
    model.get_input_embeddings().sparse = False
    assert dense.keys() == sparse.keys()
    for name in dense:
        assert torch.allclose(dense[name], sparse[name], atol=1e-6, rtol=1e-5), name
    emb = model.get_input_embeddings().weight
    assert not emb.grad.is_sparse  # dense head gradient + sparse embedding gradient arrive as one dense tensor


@pytest.mark.model
@pytest.mark.parametrize("mode", ["sequence", pytest.param("token", marks=pytest.mark.slow)])  # token: full suite
def test_loss_equals_a_straightforward_computation(smollm_fp32, math_doc, mode):
    """The clipped, normalised loss over real sampled thoughts == a per-token loop over plain forwards."""
    tok = smollm_fp32.tokenizer
    ids = tokenize(tok, math_doc.text)
    template = ThoughtTemplate()
    thoughts = ThoughtSampler(
        smollm_fp32, template, SamplingConfig(G=3, thought_tokens=6, temperature=1.0, seed=3)
    ).sample(ids, [20, 41])
    open_ids = template.open_ids(tok)
    advantages = [1.0, -0.5, -0.5, 2.0, 0.0, -2.0]
    rows = [train_row(th, open_ids, a, True) for th, a in zip(thoughts, advantages)]
    rows = [r for r in rows if r is not None]
    # an "old" policy slightly different from the current one, so ratios differ from 1 and clipping acts
    shift = lambda i, j: 0.3 * math.sin(1.7 * i + j)  # noqa: E731
    with torch.no_grad():
        logp, mask = token_logps(smollm_fp32.model, rows, 1.0, pad_id=0)
    old = logp.clone()
    for i in range(len(rows)):
        cols = mask[i].nonzero()[:, 0]
        for j, c in enumerate(cols.tolist()):
            old[i, c] = logp[i, c] + shift(i, j)
    adv = torch.tensor([r.advantage for r in rows])[:, None].expand_as(logp)
    per_token, _ = clipped_surrogate(logp, old, adv, 0.2, 0.2)
    n_tokens = int(mask.sum())
    engine = float(normalise_loss(per_token, mask, mode, len(rows) if mode == "sequence" else n_tokens))

    total = 0.0
    for i, row in enumerate(rows):
        seq = row.inputs + [row.targets[-1]]
        start = len(seq) - len(row.targets)
        terms = []
        for j, target in enumerate(row.targets):
            lp = logp_next(smollm_fp32.model, seq[: start + j], target)
            ratio = math.exp(-shift(i, j))  # new - old = -shift
            a = row.advantage
            terms.append(-min(ratio * a, min(max(ratio, 0.8), 1.2) * a))
            assert lp == pytest.approx(float(logp[i][mask[i]][j]), abs=2e-3)
        total += sum(terms) / len(terms) if mode == "sequence" else sum(terms)
    expected = total / (len(rows) if mode == "sequence" else n_tokens)
    assert engine == pytest.approx(expected, abs=1e-5)


# --------------------------------------------------------------------------- guards (issue 6)


@pytest.mark.slow
@pytest.mark.model
def test_guard_no_eos_inside_thoughts(smollm_fp32, math_doc):
    ids = tokenize(smollm_fp32.tokenizer, math_doc.text)
    positions = list(range(16, len(ids), 24))
    base = dict(G=8, thought_tokens=8, temperature=1.0, seed=1)
    free = ThoughtSampler(smollm_fp32, ThoughtTemplate(), SamplingConfig(**base)).sample(ids, positions)
    guarded = ThoughtSampler(smollm_fp32, ThoughtTemplate(), SamplingConfig(**base, allow_eos=False)).sample(
        ids, positions
    )
    assert Counter(th.closed_by for th in free)["eos"] >= 1  # this seed samples EOS inside some thoughts
    assert all(th.closed_by != "eos" for th in guarded)


@pytest.mark.slow
@pytest.mark.model
def test_guard_minimum_thought_length(gemma, math_doc):
    """With '.' as the closing marker Gemma closes many thoughts early; the guard forbids it."""
    ids = tokenize(gemma.tokenizer, math_doc.text)
    positions = list(range(16, len(ids), 24))
    template = ThoughtTemplate("<think>", ".")
    base = dict(G=8, thought_tokens=8, temperature=1.0, seed=1)
    free = ThoughtSampler(gemma, template, SamplingConfig(**base)).sample(ids, positions)
    guarded = ThoughtSampler(gemma, template, SamplingConfig(**base, min_thought_tokens=4)).sample(ids, positions)
    assert sum(th.length < 4 for th in free) >= 5
    assert all(th.length >= 4 for th in guarded)
    assert any(th.closed_by == "marker" for th in guarded)  # closing is still possible after the minimum
    with pytest.raises(WorkbenchError):
        SamplingConfig(thought_tokens=4, min_thought_tokens=5).validate()


# --------------------------------------------------------------------------- configs


def test_config_yaml_roundtrip_and_errors(tmp_path):
    cfg = load_config(REPO / "configs" / "rlp_tiny.yaml")
    assert cfg.trainer == "rlp" and cfg.ema_tau == 0.999 and cfg.loss_normalisation == "sequence"
    again = config_from_dict(__import__("yaml").safe_load(cfg.to_yaml()))
    assert again == cfg and again.fingerprint() == cfg.fingerprint()
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: rlp\nlerning_rate: 1e-5\n")
    with pytest.raises(WorkbenchError, match="unknown field"):
        load_config(bad)
    bad.write_text("trainer: rlp\nG: 1\n")
    with pytest.raises(WorkbenchError, match="G must be"):
        load_config(bad)
    bad.write_text("trainer: sft\n")
    with pytest.raises(WorkbenchError, match="trainer"):
        load_config(bad)
    assert load_config(REPO / "configs" / "rlp_tiny.yaml", {"learning_rate": "1e-5"}).learning_rate == 1e-5


def test_yaml_no_is_text_for_text_fields(tmp_path):
    """YAML 1.1 reads a bare `no`/`off` as false; text fields take it as written, boolean fields as the word says."""
    from workbench.training.configs import override_value

    cfg = tmp_path / "c.yaml"
    cfg.write_text("trainer: rlp\nmixed_precision: no\nprogress: off\nallow_eos_in_thought: yes\n")
    loaded = load_config(cfg)
    assert loaded.mixed_precision == "no" and loaded.progress is False and loaded.allow_eos_in_thought is True
    # --set: raw text for text fields, YAML for the rest
    assert override_value("mixed_precision", "no") == "no"
    assert override_value("run_name", "2026") == "2026"
    assert override_value("output_dir", "null") is None and override_value("output_dir", "off") == "off"
    assert override_value("max_steps", "3") == 3 and override_value("progress", "false") is False
    assert override_value("adam_betas", "[0.9, 0.95]") == [0.9, 0.95]
    with pytest.raises(WorkbenchError, match="must be true or false"):
        load_config(REPO / "configs" / "rlp_tiny.yaml", {"progress": "maybe"})


# --------------------------------------------------------------------------- the wiring check


@pytest.mark.slow
@pytest.mark.model
def test_rlp_raises_the_reward_of_a_fixed_batch(tmp_path):
    """Six RLP steps on one fixed batch of contexts raise that batch's mean reward (SmolLM2-135M, fixed seeds).

    Measured when written: -10.54 -> -9.98 nats (16 thoughts per context, 8 tokens). Pinned to float32 so the test is
    the same computation on every CPU: on an AMX CPU with bf16 rollouts *and* bf16 autocast at this learning rate, this
    one fixed batch went -10.36 -> -10.49 (bf16 rollouts alone: -> -9.74; bf16 training alone: -> -8.54; both at
    LR 5e-5: -> -9.99) - six steps on one batch are a smoke test of learning, not a precision study."""
    from workbench.training.launch import trainer_for

    cfg = config_from_dict(
        dict(
            trainer="rlp",
            model="smollm2-135m",
            output_dir=str(tmp_path / "run"),
            max_steps=6,
            G=8,
            thought_tokens=8,
            learning_rate=1e-4,
            eval_data="",
            rollout_dtype="float32",
            mixed_precision="no",
            checkpoint_every=100,
            progress=False,
            docs_per_step=1,
            positions_per_doc=2,
        )
    )
    trainer = trainer_for(cfg)
    fixed = trainer.draw_contexts(np.random.default_rng(7))
    trainer.draw_contexts = lambda rng: fixed

    def batch_reward() -> float:
        trainer.config.G = 16
        out = trainer.rollouts(fixed, seed=123)
        trainer.config.G = 8
        logp = np.array([[th.logp_with_thought for th in g] for g in out["thoughts"]])
        return float((logp - out["teacher_logp"][:, None]).mean())

    before = batch_reward()
    for step in range(1, 7):
        trainer.train_step(step)
        trainer.step = step
        trainer.refresh_rollout()
    after = batch_reward()
    assert after > before + 0.2, (before, after)


@pytest.mark.slow
@pytest.mark.model
def test_kl_and_ntp_ablations_run(tmp_path):
    """beta > 0 and ntp_coef > 0 (ablations; off by default). At step 1 the EMA teacher is the policy itself (its
    bf16 copy), so the k3 KL on thought tokens is bf16 noise; a teacher pass that read the rows misaligned (or
    another context) would give nats."""
    from workbench.training.launch import trainer_for

    cfg = config_from_dict(
        dict(
            trainer="rlp",
            model="smollm2-135m",
            output_dir=str(tmp_path / "run"),
            max_steps=1,
            G=2,
            thought_tokens=6,
            docs_per_step=2,
            positions_per_doc=2,
            micro_batch_rows=3,
            beta=0.1,
            ntp_coef=0.1,
            eval_data="",
            checkpoint_every=100,
            progress=False,
        )
    )
    trainer = trainer_for(cfg)
    assert trainer.packed_loss
    row = trainer.train_step(1)
    assert row["train_target_tokens"] > 0
    assert 0.0 <= row["kl"] < 0.02, row["kl"]  # measured 0.003; with the teacher's columns shifted by one, 28.9
    assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])

    # the NTP term is ntp_coef x the documents' mean next-token loss: against log_softmax(logits)[x_t+1] of a plain
    # forward of the same weights, shifted by hand (labels misaligned by one would give ~10 nats, not ~2.5)
    from workbench.training.rlp_trainer import Context

    docs = [0, 1]
    got = trainer.ntp_loss_backward([Context(d, []) for d in docs])
    model = trainer.accelerator.unwrap_model(trainer.model)
    want = []
    for d in docs:
        ids = torch.tensor(trainer.train_ids[d])
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            logits = model(ids[None]).logits[0].float()
        want.append(float(-torch.log_softmax(logits[:-1], -1).gather(1, ids[1:, None]).mean()))
    assert 1.0 < np.mean(want) < 6.0
    assert got / cfg.ntp_coef == pytest.approx(float(np.mean(want)), abs=0.05)  # bf16 autocast where auto picks it


# --------------------------------------------------------------------------- resume after SIGKILL


def _train_cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", "train", str(config), *extra]


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_metrics(tiny_model_dir, tmp_path):
    """Killed after its second checkpoint and resumed, a run logs the same metrics and thoughts as one that ran
    straight through. The tiny model: the mechanism (checkpoints, optimizer, EMA teacher, RNG, rollout log) is the
    model's size-independent part, and three real-model processes took two minutes of the suite."""
    config = tmp_path / "resume.yaml"
    config.write_text(
        f"trainer: rlp\nmodel: {tiny_model_dir}\nmax_steps: 6\ndocs_per_step: 1\npositions_per_doc: 2\nG: 2\n"
        "thought_tokens: 6\nlearning_rate: 1.0e-4\neval_every: 2\neval_docs: 1\neval_positions: every:120\n"
        "eval_G: 2\ncheckpoint_every: 1\nkeep_last: 2\nprogress: false\n"
    )
    env = {**os.environ, "WORKBENCH_COMPILE": "0", "TQDM_DISABLE": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(config, "--output-dir", str(straight)), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(config, "--output-dir", str(killed)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step-000002").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its second checkpoint"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # four steps before its end: margin for the poll above
    proc.wait()
    assert not (killed / "summary.json").exists()
    # it must refuse to start over a run with checkpoints, and resume from the last complete one
    again = subprocess.run(_train_cmd(config, "--output-dir", str(killed)), env=env, capture_output=True, text=True)
    assert again.returncode == 1 and "--resume" in again.stderr
    subprocess.run(
        _train_cmd(config, "--output-dir", str(killed), "--resume"), check=True, env=env, capture_output=True
    )

    def reproducible(run):
        return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in read_metrics(run)]

    a, b = reproducible(straight), reproducible(killed)
    assert [r["step"] for r in a] == [0, 1, 2, 3, 4, 5, 6]
    assert a == b
    # the thoughts dumped after the checkpoint were dropped on resume and sampled again, identically
    from workbench.training.tracking import read_rollouts

    assert [r["step"] for r in read_rollouts(straight)] == [s for s in range(1, 7) for _ in range(4)]
    assert read_rollouts(killed) == read_rollouts(straight)
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step-000005", "step-000006"]
    summary = json.loads((killed / "summary.json").read_text())
    assert (
        summary["steps"] == 6
        and summary["total_flops"] == json.loads((straight / "summary.json").read_text())["total_flops"]
    )
    assert "resumed from" in (killed / "train.log").read_text()


@pytest.mark.slow
def test_weights_only_checkpoints_load_but_refuse_to_resume(tiny_model_dir, tmp_path):
    from workbench.training.trainer import load_trained

    config = tmp_path / "weights_only.yaml"
    config.write_text(
        f"trainer: rlp\nmodel: {tiny_model_dir}\nmax_steps: 1\ndocs_per_step: 1\npositions_per_doc: 1\nG: 2\n"
        "thought_tokens: 4\neval_docs: 0\neval_data: ''\nsave_optimizer: false\nprogress: false\n"
    )
    run = tmp_path / "run"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    subprocess.run(_train_cmd(config, "--output-dir", str(run)), check=True, env=env, capture_output=True)
    (ckpt,) = (run / "checkpoints").iterdir()
    assert {"policy.safetensors", "teacher.safetensors"} <= {p.name for p in ckpt.iterdir()}
    assert not (ckpt / "optimizer.pt").exists()
    assert load_trained(run, "teacher").step == 1
    again = subprocess.run(
        _train_cmd(config, "--output-dir", str(run), "--resume"), env=env, capture_output=True, text=True
    )
    assert again.returncode == 1 and "save_optimizer: false" in again.stderr


@pytest.mark.slow
@pytest.mark.model
def test_empty_thought_guards_on_real_thoughts(gemma, math_doc):
    """On real Gemma thoughts with '.' as the closing marker (some end at once): the advantage cap keeps every
    empty thought's advantage <= 0 and leaves the others alone; the penalty lowers every empty thought's."""
    from workbench.engine.scorer import no_think_scores
    from workbench.training.rl_math import guarded_advantages

    ids = tokenize(gemma.tokenizer, math_doc.text)
    positions = list(range(16, len(ids), 24))
    G = 8
    thoughts = ThoughtSampler(
        gemma, ThoughtTemplate("<think>", "."), SamplingConfig(G=G, thought_tokens=8, temperature=1.0, seed=1)
    ).sample(ids, positions)
    scores, _ = no_think_scores(gemma, ids)
    rewards = torch.tensor(
        [
            [th.logp_with_thought - scores.logp[th.position] for th in thoughts[i : i + G]]
            for i in range(0, len(thoughts), G)
        ],
        dtype=torch.float64,
    )
    empty = torch.tensor([[th.length == 0 for th in thoughts[i : i + G]] for i in range(0, len(thoughts), G)])
    assert empty.any() and not empty.all()
    plain = guarded_advantages(rewards, empty)
    capped = guarded_advantages(rewards, empty, empty_cap=0.0)
    assert (capped[empty] <= 0).all() and torch.equal(capped[~empty], plain[~empty])
    assert torch.equal(capped[empty], plain[empty].clamp(max=0.0))
    penalised = guarded_advantages(rewards, empty, empty_penalty=100.0)
    assert (penalised[empty] < plain[empty] - 50).all()


# --------------------------------------------------------------------------- the trainer's own update, checked directly


def _check_teacher_update(trainer, before_teacher, tau):
    """phi_new == tau * phi_old + (1 - tau) * theta_new, parameter by parameter, and the teacher's inference copy holds
    exactly phi_new. The EMA teacher cancels in the advantages, so only a direct check like this sees a wrong update."""
    policy = [t.detach().float() for _, t in trainer.named_policy_params()]
    for old, new, theta in zip(before_teacher, trainer.ema, policy):
        torch.testing.assert_close(new, tau * old + (1 - tau) * theta, atol=1e-6, rtol=1e-5)
    for copy, phi in zip(trainer._teacher.parameters(), trainer.ema):
        assert torch.equal(copy.detach().float(), phi)


@pytest.mark.slow
@pytest.mark.model
def test_trainer_teacher_and_advantages_on_the_real_model(tmp_path, monkeypatch):
    """SmolLM2-135M, two real RLP steps with tau = 0.5 (so the teacher visibly moves): after each step the teacher is
    tau * old + (1 - tau) * policy; the logged rewards are log p_policy(x_t | x_<t, c) - log p_teacher(x_t | x_<t)
    with the teacher's score checked against a plain forward; the advantages are G/(G-1) (r - mean r). A
    deliberately broken teacher update (the two weights swapped) is caught by the same check."""
    from workbench.training import rlp_trainer
    from workbench.training.launch import trainer_for
    from workbench.training.rl_math import ema_update_

    cfg = config_from_dict(
        dict(
            trainer="rlp",
            model="smollm2-135m",
            output_dir=str(tmp_path / "run"),
            max_steps=2,
            G=3,
            thought_tokens=4,
            rollout_dtype="float32",
            mixed_precision="no",  # checked against plain fp32 forwards to 2e-4
            docs_per_step=1,
            positions_per_doc=2,
            learning_rate=1e-4,
            ema_tau=0.5,
            eval_data="",
            checkpoint_every=100,
            progress=False,
            max_doc_tokens=96,
        )
    )
    trainer = trainer_for(cfg)
    before = [t.clone() for t in trainer.ema]
    import copy

    teacher_before = copy.deepcopy(trainer._teacher)  # the teacher that scores step 1 (updated in place after it)
    row = trainer.train_step(1)
    batch = trainer.last_batch
    # the teacher's no-think score, from a plain forward of the starting weights
    (ctx,) = batch["contexts"]
    ids = trainer.train_ids[ctx.doc]
    with torch.no_grad():
        for t, got in zip(ctx.positions, batch["teacher_logp"]):
            assert got == pytest.approx(logp_next(teacher_before, ids[:t], ids[t]), abs=2e-4)
    logp_with = torch.tensor([[th.logp_with_thought for th in g] for g in batch["thoughts"]], dtype=torch.float64)
    rewards = logp_with - torch.tensor(batch["teacher_logp"])[:, None]
    assert torch.equal(batch["rewards"], rewards)
    G = cfg.G
    torch.testing.assert_close(batch["advantages"], G / (G - 1) * (rewards - rewards.mean(-1, keepdim=True)))
    assert row["reward_mean"] == pytest.approx(float(rewards.mean()))
    assert row["degenerate_group_share"] == 0.0
    _check_teacher_update(trainer, before, 0.5)
    moved = max(float((a - b).abs().max()) for a, b in zip(trainer.ema, before))
    assert moved > 1e-6  # the step changed the weights, so the check above could fail

    def swapped(teacher, policy, tau):  # the bug: phi <- (1 - tau) phi + tau theta
        ema_update_(teacher, policy, 1.0 - tau)

    monkeypatch.setattr(rlp_trainer, "ema_update_", lambda teacher, policy, tau: swapped(teacher, policy, 0.8))
    before = [t.clone() for t in trainer.ema]
    trainer.step = 1
    trainer.refresh_rollout()
    trainer.train_step(2)
    with pytest.raises(AssertionError):
        _check_teacher_update(trainer, before, 0.5)
    trainer.close()


def test_paper_faithful_configs_sample_thoughts_of_at_least_one_token():
    """The paper's Algorithm 1 samples |c| >= 1: that is the default and the faithful collapse config; allowing the
    empty thought is a deviation, and run.json will say so."""
    from workbench.training.rlp_config import RLPConfig

    assert RLPConfig().min_thought_tokens == 1 and RLPConfig().deviations == []
    assert RLPConfig(design_options={"floor": -1.0}).deviations == [
        "reward_design rlp with options {'floor': -1.0}: a variant of RLP's information gain"
    ]
    from workbench.training.configs import config_from_dict

    with pytest.raises(WorkbenchError, match="rlp has no option flor; its options: floor"):
        config_from_dict({"trainer": "rlp", "design_options": {"flor": -1}})
    with pytest.raises(WorkbenchError, match="floor of rlp must be a number, got 'x'"):
        config_from_dict({"trainer": "rlp", "design_options": {"floor": "x"}})
    assert config_from_dict(
        {"trainer": "rlp", "reward_design": "nover", "design_options": {"segment": 8}}
    ).design_options
    faithful = load_config(REPO / "configs" / "collapse_faithful.yaml")
    allowed = load_config(REPO / "configs" / "collapse_empty_allowed.yaml")
    guarded = load_config(REPO / "configs" / "collapse_guarded.yaml")
    assert faithful.min_thought_tokens == 1 and not faithful.guarded and faithful.deviations == []
    assert allowed.min_thought_tokens == 0 and any("empty thought" in d for d in allowed.deviations)
    assert guarded.guarded and any("guards" in d for d in guarded.deviations)
    # the three differ only in the fields under test
    under_test = ("run_name", "min_thought_tokens", "loss_normalisation", "allow_eos_in_thought", "empty_advantage_cap")

    def strip(c):
        return {k: v for k, v in c.to_dict().items() if k not in under_test}

    assert strip(faithful) == strip(allowed) == strip(guarded)
    assert load_config(REPO / "configs" / "rlp_tiny.yaml").min_thought_tokens == 1


@pytest.mark.model
def test_inference_copy_equals_the_model_loaded_in_that_dtype(smollm_fp32):
    """The trainer's bf16 inference copy (sharding.plain_copy of the fp32 policy) computes exactly what load_model(...,
    dtype="bfloat16") computes: the parameters are cast, the rotary inverse frequencies stay fp32. (Casting the whole
    module also cast those buffers; a run's step-0 evaluation then differed from the same weights evaluated in a
    notebook.)"""
    import torch
    from conftest import SMOLLM

    from workbench.models import load_model
    from workbench.training.sharding import plain_copy

    copy16 = plain_copy(smollm_fp32.model, torch.bfloat16)
    loaded16 = load_model(SMOLLM, dtype="bfloat16").model
    assert {b.dtype for b in copy16.buffers()} == {b.dtype for b in smollm_fp32.model.buffers()} == {torch.float32}
    assert {p.dtype for p in copy16.parameters()} == {torch.bfloat16}
    ids = torch.arange(100, 400)[None]  # 300 positions: where coarse rotary frequencies show
    with torch.no_grad():
        assert torch.equal(copy16(ids).logits, loaded16(ids).logits)
