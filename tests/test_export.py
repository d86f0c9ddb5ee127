"""`workbench export RUN_DIR OUT_DIR`: a plain transformers directory with a model card.

Fast tier: the model card of hand-written run directories (the lineage through a warm start, the base model's licence,
the run's numbers), the one-line errors, and the hub push that cannot happen offline - none of them loads a model.
Full suite: a real round trip - two RLP steps on the tiny random Llama (conftest.tiny_model_dir), exported by the CLI
and loaded back in a process that cannot import the workbench, with the same logits as `load_model(RUN_DIR)`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from workbench.cli import main
from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- hand-written run directories


def _rows(flops_per_step: float, steps: int) -> list[dict]:
    rows = [
        {
            "step": 0,
            "flops": 0.0,
            "budget_tokens": 0,
            "eval_loss": 2.5,
            "eval_perplexity": 12.1825,
            "eval_reward_mean": -0.75,
            "time_eval_s": 1.0,
        }
    ]
    for step in range(1, steps + 1):
        rows.append(
            {
                "step": step,
                "reward_mean": 0.1 * step,
                "flops": flops_per_step * step,
                "budget_tokens": 100 * step,
                "step_time_s": 2.0,
                "eval_loss": 2.5 - 0.125 * step,
                "eval_perplexity": 12.1825 - step,
                "eval_reward_mean": -0.75 + 0.3125 * step,
                "time_eval_s": 1.0,
            }
        )
    return rows


def fake_run(
    path: Path,
    trainer: str,
    model: str,
    steps: int = 2,
    flops_per_step: float = 1.5e12,
    model_path: str | None = None,
    train_data: str = "thinking:train",
    film: bool = True,
) -> Path:
    """A run directory as a trainer leaves it (config, run.json, metrics, a checkpoint, the film), without weights."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(
        f"trainer: {trainer}\nmodel: {model}\nseed: 7\ntrain_data: {train_data}\n"
        f"eval_data: thinking:eval\nmax_steps: {steps}\nthink_open: <think>\n"
        "think_close: </think>\n"
    )
    (path / "run.json").write_text(
        json.dumps(
            {
                "seed": 7,
                "trainer": trainer,
                "model_path": model_path or model,
                "device": "cpu",
                "processes": 1,
                "hardware": {"mixed_precision": "no", "rollout_dtype": "float32", "cpu": "a test CPU"},
            }
        )
    )
    rows = _rows(flops_per_step, steps)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "summary.json").write_text(
        json.dumps(
            {"steps": steps, "stopped_by": "max_steps", "total_flops": flops_per_step * steps, "wall_time_s": 12.5}
        )
    )
    ckpt = path / "checkpoints" / f"step-{steps:06d}"
    ckpt.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(ckpt / "policy.safetensors"))  # whole, though the card does not read it
    (ckpt / "state.json").write_text(
        json.dumps({"step": steps, "flops": flops_per_step * steps, "budget_tokens": 100 * steps})
    )
    if film:
        (path / "film").mkdir()
        for step in (0, steps):
            frame = {
                "step": step,
                "model": model,
                "tokens": ["A", "B", "C", "D"],
                "positions": [
                    {
                        "position": 2,
                        "reward_mean": 0.5 * step,
                        "content_gain_mean": 0.1,
                        "best_thought": "B comes before C",
                    }
                ],
            }
            (path / "film" / f"step-{step:06d}.json").write_text(json.dumps(frame))
    return path


@pytest.fixture
def rlp_on_warm_start(tmp_path):
    """An RLP run on `warm:gemma3-270m`: run.json names the warm start's (run) directory, whose model is the base."""
    warm = fake_run(
        tmp_path / "warm",
        "warmstart",
        "gemma3-270m",
        steps=32,
        flops_per_step=2e12,
        train_data="thinking:train+corpus:train",
        film=False,
    )
    return fake_run(tmp_path / "rlp", "rlp", "warm:gemma3-270m", steps=3, model_path=str(warm))


def test_card_names_the_base_its_licence_and_the_runs_numbers(rlp_on_warm_start):
    from huggingface_hub import ModelCard

    from workbench.export import RLP_CITATION, film_last_frame, flops_text, lineage, model_card

    run = rlp_on_warm_start
    lin = lineage(run)
    assert [f.trainer for f in lin.runs] == ["rlp", "warmstart"] and lin.base.name == "gemma3-270m"
    card = model_card(lin, dtype="float32", film_frame=film_last_frame(run, 3), film_image="film_last_frame.png")
    meta = ModelCard(card.content).data.to_dict()  # the YAML block, read back as the hub reads it
    assert meta["license"] == "gemma" and meta["license_link"] == "https://ai.google.dev/gemma/terms"
    assert meta["base_model"] == "google/gemma-3-270m" and meta["library_name"] == "transformers"
    text = card.text
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    for number in (
        f"{first['eval_loss']:.4f}",
        f"{last['eval_loss']:.4f}",
        f"{last['eval_perplexity']:.4f}",
        f"{last['eval_reward_mean'] - first['eval_reward_mean']:.4f}",
        flops_text(last["flops"]),
        flops_text(last["flops"] + 64e12),
    ):  # this run, and with its warm start
        assert number in text, number
    assert "| step 0 (before) | step 3 (after) |" in text
    assert "`warm:gemma3-270m`" in text and "`thinking:train+corpus:train`" in text  # the lineage
    assert "- **Seed:** 7" in text and "wall time 12.5 s" in text and "- **Steps:** 3 of max_steps 3" in text
    assert "```yaml\ntrainer: rlp\nmodel: warm:gemma3-270m\n" in text  # the run's config, verbatim
    assert "![held-out reward map at step 3](film_last_frame.png)" in text and "B comes before C" in text
    assert RLP_CITATION in text and "2510.01265" in text and "Gemma Terms of Use" in text
    assert "float32" in text and "`<think>` and `</think>`" in text


def test_licence_of_smollm2_and_of_a_warm_start_no_longer_cached(tmp_path):
    from workbench.export import lineage, model_card

    run = fake_run(tmp_path / "rlp", "rlp", "warm:smollm2-135m", model_path=str(tmp_path / "gone"), film=False)
    lin = lineage(run)
    assert lin.base.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct" and lin.base.licence.license == "apache-2.0"
    card = model_card(lin, dtype="bfloat16")
    assert card.data.license == "apache-2.0" and card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "held-out reward map" not in card.text  # no film, no film section

    local = fake_run(
        tmp_path / "local", "ntp", str(tmp_path), film=False
    )  # a model directory the workbench cannot name
    card = model_card(lineage(local), dtype="float32")
    assert card.data.license == "other" and card.data.base_model is None and "check it before sharing" in card.text


def _export(capsys, *args: str) -> tuple[int, list[str]]:
    code = main(["export", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_errors_are_one_line(rlp_on_warm_start, tmp_path, capsys):
    run = rlp_on_warm_start
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    no_ckpt = tmp_path / "started"
    no_ckpt.mkdir()
    (no_ckpt / "config.yaml").write_text("trainer: rlp\nmodel: gemma3-270m\n")
    cases = [
        ((str(tmp_path / "missing"), str(tmp_path / "o1")), "does not exist"),
        ((str(tmp_path), str(tmp_path / "o2")), "not a training run directory"),
        ((str(model_dir), str(tmp_path / "o3")), "already a transformers model directory"),
        ((str(no_ckpt), str(tmp_path / "o4")), "has no checkpoint"),
        ((str(run), str(full)), "is not empty"),
        ((str(run), str(run), "--overwrite"), "holds the run itself"),
        ((str(run), str(run.parent), "--overwrite"), "holds the run itself"),
    ]
    for args, needle in cases:
        code, err = _export(capsys, *args)
        assert code == 1 and len(err) == 1 and needle in err[0], (args, err)
        assert err[0].startswith("workbench export: error: ")
    assert (full / "keep.txt").read_text() == "mine" and not (tmp_path / "o1").exists()


def test_push_to_hub_offline_or_without_a_token_stops_before_exporting(
    rlp_on_warm_start, tmp_path, capsys, monkeypatch
):
    from huggingface_hub import constants

    out = tmp_path / "out"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored token either
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = _export(capsys, str(rlp_on_warm_start), str(out), "--push-to-hub", "someone/rlp-model")
    assert code == 1 and len(err) == 1 and "offline" in err[0] and not out.exists()

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    code, err = _export(capsys, str(rlp_on_warm_start), str(out), "--push-to-hub", "someone/rlp-model")
    assert code == 1 and len(err) == 1 and "no Hugging Face token" in err[0] and not out.exists()

    code, err = _export(capsys, str(rlp_on_warm_start), str(out), "--push-to-hub", "not a repo id!")
    assert code == 1 and len(err) == 1 and "not a hub repository id" in err[0]


def test_a_connection_error_during_the_push_is_one_line(tmp_path, monkeypatch):
    import httpx
    from huggingface_hub import HfApi

    from workbench.export import push_folder

    def no_network(self, *args, **kwargs):
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(HfApi, "create_repo", no_network)
    (tmp_path / "README.md").write_text("card")
    with pytest.raises(WorkbenchError) as info:
        push_folder(tmp_path, "someone/rlp-model", token="hf_fake")
    message = str(info.value)
    assert "could not reach the hub" in message and str(tmp_path) in message and "\n" not in message

    def bug(self, *args, **kwargs):
        raise KeyError("a bug stays a bug")

    monkeypatch.setattr(HfApi, "create_repo", bug)
    with pytest.raises(KeyError):
        push_folder(tmp_path, "someone/rlp-model", token="hf_fake")


# --------------------------------------------------------------------------- the real round trip


PLAIN_LOAD = textwrap.dedent("""
    import sys
    sys.modules["workbench"] = None  # any import of the workbench fails: only transformers reads the directory
    import json, torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    out, text, dest = sys.argv[1:4]
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    model.eval()
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0]
    torch.save({"ids": ids[0], "logits": logits, "dtype": str(next(model.parameters()).dtype),
                "markers": [tok.encode(m, add_special_tokens=False) for m in ("<think>", "</think>")],
                "modules": sorted(m for m, mod in sys.modules.items() if m.startswith("workbench") and mod)}, dest)
""")


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )


@pytest.mark.slow
@pytest.mark.model
def test_round_trip_plain_transformers_gives_the_runs_logits(tiny_model_dir, tiny_rlp_config, tmp_path):
    import torch

    from workbench.export import flops_text
    from workbench.models import load_model
    from workbench.training.launch import train

    run = tmp_path / "run"
    train(
        tiny_rlp_config(
            run,
            max_steps=2,
            learning_rate=1e-2,
            eval_data="corpus:eval",
            eval_docs=1,
            eval_positions="every:16",
            eval_G=2,
            eval_thought_tokens=4,
            seed=3,
        )
    )
    out = tmp_path / "export"
    done = _cli("export", str(run), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(out.resolve())
    files = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "film_last_frame.png",
    } <= files, files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)

    # plain transformers, in a process without the workbench
    text = "Two and two make <think> 2 + 2 = 4 </think> four."
    got = subprocess.run(
        [sys.executable, "-c", PLAIN_LOAD, str(out), text, str(tmp_path / "plain.pt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert got.returncode == 0, got.stderr[-3000:]
    plain = torch.load(tmp_path / "plain.pt", weights_only=True)
    assert plain["modules"] == [] and plain["dtype"] == "torch.float32"

    handle = load_model(str(run), dtype="float32")
    ids = handle.tokenizer(text, return_tensors="pt").input_ids
    assert torch.equal(plain["ids"], ids[0])  # the tokenizer (BOS, markers) round-trips
    assert plain["markers"] == [handle.tokenizer.encode(m, add_special_tokens=False) for m in ("<think>", "</think>")]
    with torch.no_grad():
        want = handle.model(ids).logits[0]
    base = load_model(str(tiny_model_dir), dtype="float32")
    with torch.no_grad():
        before = base.model(ids).logits[0]
    assert (want - before).abs().max() > 1e-3  # the run's weights, not the base model's
    torch.testing.assert_close(plain["logits"], want, rtol=0, atol=1e-5)

    # the card: metadata and the run's own numbers
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert card.data.license == "other" and card.data.base_model is None  # a local random model: no known base
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_loss" in r]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 2
    for number in (f"{evals[0]['eval_loss']:.4f}", f"{evals[-1]['eval_loss']:.4f}", flops_text(rows[-1]["flops"])):
        assert number in card.text, number
    assert "![held-out reward map at step 2](film_last_frame.png)" in card.text

    # a second export refuses the full directory; --overwrite replaces it
    again = _cli("export", str(run), str(out))
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1 and "not empty" in again.stderr
    again = _cli("export", str(run), str(out), "--overwrite")
    assert again.returncode == 0, again.stderr[-3000:]

    # --push-to-hub offline: one line, no traceback, non-zero
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    pushed = subprocess.run(
        [
            sys.executable,
            "-m",
            "workbench.cli",
            "export",
            str(run),
            str(tmp_path / "pushed"),
            "--push-to-hub",
            "someone/rlp-tiny",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")},
        timeout=300,
    )
    lines = pushed.stderr.strip().splitlines()
    assert pushed.returncode == 1 and len(lines) == 1 and "offline" in lines[0] and "Traceback" not in pushed.stderr
