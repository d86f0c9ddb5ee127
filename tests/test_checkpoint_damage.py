"""Damaged checkpoints give one line or a named fallback; a finished run can be extended (issue: "Damaged checkpoints").

A 2-step RLP run on the tiny model keeps both checkpoints; each file of the newest one is cut to half, zeroed or
deleted in turn, in a copy of the run, and then the run is resumed, loaded and exported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError

FILES = ("policy.safetensors", "teacher.safetensors", "optimizer.pt", "rng.pt", "state.json")


@pytest.fixture(scope="module")
def _config(tiny_rlp_config):
    """Two steps, a checkpoint (with the optimizer) after each, both kept."""

    def make(out, **extra):
        fields = dict(max_steps=2, checkpoint_every=1, keep_last=2, save_optimizer=True, learning_rate=1e-2)
        return tiny_rlp_config(out, **{**fields, **extra})

    return make


@pytest.fixture(scope="module")
def finished_run(_config, tmp_path_factory):
    from workbench.training.launch import train

    out = tmp_path_factory.mktemp("damage") / "run"
    train(_config(out))
    return out


def _damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:  # zero: the same size, every byte 0 (a bad sector, a sparse file)
        path.write_bytes(bytes(path.stat().st_size))


def _files(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_size for p in run.rglob("*") if p.is_file()}


FAST = {("policy.safetensors", "truncate"), ("optimizer.pt", "zero"), ("state.json", "delete")}  # the rest: --full
CASES = [
    pytest.param(name, how, marks=() if (name, how) in FAST else pytest.mark.slow)
    for name in FILES
    for how in ("truncate", "zero", "delete")
]


@pytest.mark.parametrize("name, how", CASES)
def test_each_damaged_file_is_one_line_or_a_named_fallback(finished_run, _config, tmp_path, capsys, name, how):
    from workbench.export import export_run
    from workbench.models import load_model
    from workbench.training.checkpoints import checkpoint_problem
    from workbench.training.launch import trainer_for

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    newest = run / "checkpoints" / "step-000002"
    _damage(newest / name, how)
    problem = checkpoint_problem(newest)
    assert problem is not None and name in problem
    before = _files(run)

    # load_model(RUN): the policy weights of the newest checkpoint whose policy file is whole, with a warning if skipped
    handle = load_model(str(run), dtype="float32")
    policy_hurt = name in ("policy.safetensors", "state.json")
    assert handle.step == (1 if policy_hurt else 2)
    err = capsys.readouterr().err
    assert ("skipped the damaged checkpoint(s) step-000002" in err and name in err) == policy_hurt

    # export: a damaged last checkpoint is refused with one line (never an older model in silence); --step picks one
    if policy_hurt:
        with pytest.raises(
            WorkbenchError,
            match=r"will not export a damaged checkpoint: .*"
            + name.replace(".", r"\.")
            + r".*--step N \(complete: steps \[1\]\)",
        ):
            export_run(run, tmp_path / "export")
        assert not (tmp_path / "export").exists()
        export_run(run, tmp_path / "export", step=1)
        assert (tmp_path / "export" / "config.json").is_file()
    assert _files(run) == before  # loading and exporting changed nothing in the run

    # resume: the newest complete checkpoint, the damaged one set aside (kept) with a warning in train.log
    trainer = trainer_for(_config(run), resume=True)
    assert trainer.step == 1
    trainer.close()
    log = (run / "train.log").read_text()
    assert "skipped the damaged checkpoint(s) step-000002" in log and name in log
    assert (run / "checkpoints" / "step-000002.damaged").is_dir() and not newest.exists()
    # nothing of the run was lost: every file is where it was, the logs resuming cut back are kept whole beside the
    # damaged checkpoint
    after = {str(p.relative_to(run)): p.stat().st_size for p in run.rglob("*") if p.is_file()}
    for key, size in before.items():
        if key in ("train.log", "metrics.jsonl", "rollouts.jsonl"):
            continue
        moved = key.replace("checkpoints/step-000002/", "checkpoints/step-000002.damaged/")
        assert after.get(moved) == size, key
    for log in ("metrics.jsonl", "rollouts.jsonl"):
        assert after[f"checkpoints/step-000002.damaged/{log}"] == before[log]


def test_a_run_with_every_checkpoint_damaged_is_one_line(finished_run, tmp_path):
    from workbench.models import load_model

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for ckpt in (run / "checkpoints").iterdir():
        _damage(ckpt / "policy.safetensors", "truncate")
    with pytest.raises(WorkbenchError, match="every checkpoint of .* is damaged"):
        load_model(str(run))


@pytest.mark.slow  # three short runs; the fast tier resumes a damaged run above
def test_a_finished_run_extends_to_a_larger_max_steps(finished_run, _config, tmp_path):
    """Resuming with max_steps 3 continues the finished 2-step run; its steps are those of a run trained to 3 at once,
    and run.json records the extension. A field that changes past steps is still refused, by name."""
    from workbench.training.launch import train
    from workbench.training.trainer import read_metrics

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    train(_config(run, max_steps=3, keep_last=3), resume=True)
    straight = tmp_path / "straight"
    train(_config(straight, max_steps=3, keep_last=3))
    extended, whole = read_metrics(run), read_metrics(straight)
    assert [r["step"] for r in extended] == [0, 1, 2, 3] == [r["step"] for r in whole]
    for a, b in zip(extended, whole):
        for key in ("reward_mean", "loss", "grad_norm", "flops"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["step"], key)
    record = json.loads((run / "run.json").read_text())
    assert record["extensions"][0]["at_step"] == 2
    assert record["extensions"][0]["changed"]["max_steps"] == [2, 3]

    with pytest.raises(WorkbenchError, match=r"differs from the run's own config.yaml in learning_rate"):
        train(_config(run, max_steps=4, learning_rate=5e-2), resume=True)
    with pytest.raises(WorkbenchError, match=r"max_steps \(lr_scheduler cosine"):
        train(_config(tmp_path / "cos", max_steps=1, lr_scheduler="cosine"))
        train(_config(tmp_path / "cos", max_steps=2, lr_scheduler="cosine"), resume=True)


def test_a_damaged_converted_model_is_converted_again(tmp_path, monkeypatch, capsys):
    """A bundled model's converted directory in the cache whose weights were cut is converted again, saying so."""
    import workbench.models as models
    from workbench.file_checks import model_dir_problem

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    version = models.importlib.metadata.version(models.BUNDLED["smollm2-135m"].package)
    folder = tmp_path / "models" / f"smollm2-135m-{version}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(bytes(100))
    assert "model.safetensors is damaged" in model_dir_problem(folder)
    converted = []

    def fake_convert(gguf_path, out):
        converted.append(out)
        out.mkdir(parents=True)
        return out

    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    assert models.bundled_model_dir("smollm2-135m") == folder and converted == [folder]
    err = capsys.readouterr().err
    assert "smollm2-135m in the cache is damaged" in err and "converting it again" in err


@pytest.mark.slow
@pytest.mark.model
def test_a_damaged_cached_warm_start_is_reinstalled_or_one_line(tmp_path, monkeypatch):
    """A cached warm start whose adapter was cut: the notebooks' and CLI's path (thinking_ready_model) installs the
    shipped one again; a trainer naming warm:BASE (which trains nothing first) gets one line."""
    import workbench.models as models
    from workbench.training import warm_start
    from workbench.training.warm_start_cache import cached_model_path

    real_cache = models.cache_dir()
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").symlink_to(real_cache / "models")
    monkeypatch.setattr(warm_start, "WarmStartTrainer", None)  # training would fail: it must not be reached
    path = Path(warm_start.thinking_ready_model("gemma3-270m", log=lambda m: None))
    adapter = next(path.glob("checkpoints/step-*/policy.safetensors"))
    _damage(adapter, "truncate")
    with pytest.raises(WorkbenchError, match="the cached warm start is damaged .*policy.safetensors"):
        cached_model_path("warm:gemma3-270m")
    said: list[str] = []
    assert warm_start.thinking_ready_model("gemma3-270m", log=said.append) == str(path)
    assert "damaged" in said[0] and "installing it again" in said[0]
    assert cached_model_path("warm:gemma3-270m") == str(path)  # whole again


def test_the_cli_gives_one_line_or_the_fallback(finished_run, tmp_path, capsys):
    """workbench export / score --model / train --resume on a run whose last policy file was cut: export refuses in
    one line; score falls back to step 1 with a warning; no traceback anywhere."""
    from workbench.cli import main

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _damage(run / "checkpoints" / "step-000002" / "policy.safetensors", "truncate")
    assert main(["export", str(run), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("workbench export: error: will not export a damaged checkpoint")
        and len(err.strip().splitlines()) == 1
    )
    assert "Traceback" not in err
    corpus = Path(__file__).resolve().parents[1] / "data" / "corpus" / "train.jsonl"
    assert (
        main(
            [
                "score",
                str(corpus),
                "--doc",
                "math-01",
                "--max-tokens",
                "40",
                "--at",
                "20",
                "--thought",
                "so",
                "--model",
                str(run),
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "skipped the damaged checkpoint(s) step-000002" in err and "Traceback" not in err
    assert main(["train", str(run / "config.yaml"), "--resume", str(run), "--set", "max_steps", "2"]) == 0
    assert (run / "checkpoints" / "step-000002").is_dir() and (run / "checkpoints" / "step-000002.damaged").is_dir()
