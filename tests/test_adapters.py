"""LoRA adapters (`peft:` in a training config), the warm start shipped as an adapter, and a report without weights.

The trainer tests run on the tiny model (conftest.tiny_model_dir): their subject is a mechanism (what a checkpoint
holds, what `load_model(RUN)` rebuilds), not a reward. The shipped warm start is checked on the real bundled model.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from workbench.adapters import check_peft_spec
from workbench.errors import WorkbenchError
from workbench.training.configs import config_from_dict


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"rank": 8}, "unknown field(s) rank"),
        ({"r": "8"}, "r has the wrong type"),
        ({"r": 0}, "r must be >= 1"),
        ({"r": True}, "r has the wrong type"),
        ({"lora_dropout": 1.5}, "lora_dropout must be in [0, 1)"),
        ("r=8", "peft must be a mapping"),
    ],
)
def test_a_bad_peft_spec_is_one_line(spec, message):
    with pytest.raises(WorkbenchError) as err:
        check_peft_spec(spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_peft_defaults_and_fingerprints():
    assert check_peft_spec(None) is None and check_peft_spec({}) is None
    assert check_peft_spec({"r": 4}) == {"r": 4, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}
    base = dict(trainer="ntp", model="gemma3-270m", eval_data="")
    plain = config_from_dict(base)
    assert "peft" not in json.dumps({k: v for k, v in plain.to_dict().items() if v is not None})
    # a config without adapters keeps the fingerprint it had before the field existed (cached runs stay valid)
    assert plain.fingerprint() == config_from_dict({**base, "peft": None}).fingerprint()
    assert plain.fingerprint() != config_from_dict({**base, "peft": {"r": 4}}).fingerprint()
    rlp = config_from_dict(dict(trainer="rlp", model="gemma3-270m", peft={"r": 4}))
    assert any(d.startswith("peft: LoRA adapters (r 4)") for d in rlp.deviations)  # a labelled variant in run.json
    with pytest.raises(WorkbenchError, match="vLLM sampler takes whole weights"):
        config_from_dict(dict(trainer="rlp", model="gemma3-270m", peft={"r": 4}, sampler_backend="vllm"))


@pytest.mark.slow
def test_rlp_on_an_adapter_keeps_the_papers_ema_teacher(tiny_model_dir, tmp_path):
    """RLP with peft: after each step the teacher is the EMA of theta = W0 + scaling B A, computed here independently
    from peft's own merge_and_unload of a copy of the policy; the weights no adapter touches stay the base's; the
    checkpoint's teacher holds the adapted weights only, and load_trained(RUN, 'teacher') and resume read it back."""
    import copy

    from safetensors.torch import load_file

    from workbench.models import load_model
    from workbench.training.checkpoints import latest_checkpoint
    from workbench.training.launch import trainer_for
    from workbench.training.trainer import load_trained

    tau = 0.5  # a fast teacher, so that two steps move it visibly
    cfg = config_from_dict(
        dict(
            trainer="rlp",
            model=str(tiny_model_dir),
            output_dir=str(tmp_path / "rlp"),
            max_steps=2,
            docs_per_step=1,
            positions_per_doc=2,
            G=2,
            thought_tokens=4,
            max_doc_tokens=48,
            eval_data="",
            checkpoint_every=2,
            save_optimizer=True,
            progress=False,
            learning_rate=5e-2,
            ema_tau=tau,
            peft={"r": 4, "lora_alpha": 8},
            mixed_precision="no",
            rollout_dtype="float32",
        )
    )
    trainer = trainer_for(cfg)
    base = {n: t.clone() for n, t in load_model(str(tiny_model_dir), dtype="float32").model.named_parameters()}
    expected = dict(base)  # phi_0 = theta_0 = the base (B starts at zero)
    for step in (1, 2):
        trainer.step = step
        trainer.train_step(step)
        theta = dict(copy.deepcopy(trainer.policy).merge_and_unload().named_parameters())  # peft's own merge
        expected = {n: tau * expected[n] + (1 - tau) * theta[n].detach() for n in expected}
    teacher = dict(trainer.teacher.model.named_parameters())
    moved = [n for n in base if not torch.equal(teacher[n], base[n])]
    assert moved
    assert set(moved) <= set(trainer.ema_names) and "model.embed_tokens.weight" not in trainer.ema_names
    for n in base:
        assert torch.allclose(teacher[n], expected[n], atol=1e-6), n
    drift = trainer.teacher_drift()
    assert 0 < drift["all"] < 1 and drift["embedding"] == 0  # the adapter never touches the embedding
    trainer.save()
    saved_teacher = {n: t.clone() for n, t in teacher.items()}
    trainer.close()

    ckpt = latest_checkpoint(tmp_path / "rlp")
    assert set(load_file(ckpt / "teacher.safetensors")) == set(trainer.ema_names)
    assert all("lora_" in k for k in load_file(ckpt / "policy.safetensors"))
    loaded = dict(load_trained(tmp_path / "rlp", "teacher", dtype="float32").model.named_parameters())
    for n, t in saved_teacher.items():
        assert torch.allclose(loaded[n], t, atol=1e-6), n
    resumed = trainer_for(cfg, resume=True)
    for n, t in resumed.teacher.model.named_parameters():
        assert torch.allclose(t, saved_teacher[n], atol=1e-6), n
    resumed.close()


@pytest.mark.slow
def test_a_lora_run_checkpoints_the_adapter_and_loads_merged(tiny_model_dir, tmp_path):
    """Two NTP steps with adapters: the checkpoint holds LoRA matrices only, every other weight of the trainer's model
    is the base's, and load_model(RUN) - base + adapter, merged - gives the trainer's own logits."""
    from safetensors.torch import load_file

    from workbench.models import load_model
    from workbench.training.checkpoints import latest_checkpoint
    from workbench.training.launch import trainer_for

    cfg = config_from_dict(
        dict(
            trainer="ntp",
            model=str(tiny_model_dir),
            output_dir=str(tmp_path / "lora"),
            max_steps=2,
            docs_per_step=2,
            max_doc_tokens=64,
            eval_data="",
            checkpoint_every=2,
            save_optimizer=True,
            progress=False,
            learning_rate=1e-2,
            peft={"r": 4, "lora_alpha": 8},
            mixed_precision="no",  # fp32 logits to compare
        )
    )
    trainer = trainer_for(cfg)
    trainer.train()
    ids = torch.tensor([[1, 504, 2876, 314, 253, 1345, 30, 378, 2330]])
    with torch.no_grad():
        trained_logits = trainer.policy(input_ids=ids).logits
    base = load_model(str(tiny_model_dir), dtype="float32")
    with torch.no_grad():
        base_logits = base.model(input_ids=ids).logits
    trainer.close()

    ckpt = latest_checkpoint(tmp_path / "lora")
    adapter = load_file(ckpt / "policy.safetensors")
    assert adapter and all("lora_A" in k or "lora_B" in k for k in adapter)
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)  # the adapter learned something
    loaded = load_model(str(tmp_path / "lora"), dtype="float32")
    assert type(loaded.model).__name__ == type(base.model).__name__  # a plain model, the adapter merged in
    with torch.no_grad():
        merged_logits = loaded.model(input_ids=ids).logits
    assert torch.allclose(merged_logits, trained_logits, atol=1e-4)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4)

    # resuming reads the adapter back (a trainer built with resume=True restores the last checkpoint)
    resumed = trainer_for(cfg, resume=True)
    assert resumed.step == 2
    with torch.no_grad():
        assert torch.allclose(resumed.policy(input_ids=ids).logits, trained_logits, atol=1e-5)
    resumed.close()


@pytest.mark.slow
@pytest.mark.model
def test_the_shipped_warm_start_installs_in_seconds_and_checks_its_files(tmp_path, monkeypatch):
    """warm:gemma3-270m on an empty cache comes from data/warmstart (no training); a shipped file that does not match
    its checksum is one error naming it."""
    from workbench.training import warm_start
    from workbench.training.warm_start_cache import cached_warm_start

    for base in ("gemma3-270m", "smollm2-135m"):  # both bundled models' warm starts ship (SmolLM2's for the tests)
        shipped = warm_start.shipped_warm_start(base)
        manifest = json.loads((shipped / "manifest.json").read_text())
        assert manifest["key"] == cached_warm_start(base).name.rsplit("-", 1)[-1], (
            f"configs/warmstart.yaml, the thinking corpus or the trainer's arithmetic changed: retrain and re-ship the "
            f"warm start of {base} (training.warm_start.ship_warm_start)"
        )
        adapter = next(shipped.glob("checkpoints/step-*/policy.safetensors"))
        assert adapter.stat().st_size < 20e6
    shipped = warm_start.shipped_warm_start("gemma3-270m")
    # the notebooks ask for the shipped one by default (another step count would train one inside the notebook)
    from pathlib import Path

    from workbench.notebook_runner import notebook_parameters
    from workbench.training.warm_start_cache import warm_start_config

    for notebook in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        steps = notebook_parameters(notebook).get("warm_start_steps")
        assert steps in (None, warm_start_config("gemma3-270m").max_steps), notebook.name

    import workbench.models as models

    real_cache = models.cache_dir()
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").symlink_to(real_cache / "models")  # the converted base model, not the warm start
    monkeypatch.setattr(warm_start, "WarmStartTrainer", None)  # training would fail: it must not be reached
    said: list[str] = []
    path = warm_start.thinking_ready_model("gemma3-270m", log=said.append)
    assert path.startswith(str(tmp_path / "cache")) and "shipped" in said[0]
    run = json.loads((tmp_path / "cache" / "warmstart" / path.rsplit("/", 1)[-1] / "run.json").read_text())
    assert run["model_path"] == "gemma3-270m"

    damaged = tmp_path / "shipped"
    shutil.copytree(shipped, damaged)
    with open(next(damaged.glob("checkpoints/step-*/policy.safetensors")), "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\0\1\2\3")
    monkeypatch.setattr(warm_start, "shipped_warm_start", lambda base: damaged)
    shutil.rmtree(tmp_path / "cache" / "warmstart")
    with pytest.raises(WorkbenchError, match="damaged: .*policy.safetensors does not match its checksum"):
        warm_start.thinking_ready_model("gemma3-270m", log=said.append)


def test_a_report_drops_the_weights_of_its_runs_and_says_so(tmp_path):
    from workbench.models import load_run_model
    from workbench.notebook_runner import WEIGHTS_REMOVED, drop_weights

    run = tmp_path / "report" / "04_training" / "training" / "rlp"
    (run / "checkpoints" / "step-000002").mkdir(parents=True)
    (run / "checkpoints" / "step-000002" / "policy.safetensors").write_bytes(b"x" * 1000)
    (run / "config.yaml").write_text("trainer: rlp\nmodel: gemma3-270m\n")
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    assert drop_weights(tmp_path / "report") == [run]
    assert not (run / "checkpoints").exists() and (run / "metrics.jsonl").exists() and (run / "config.yaml").exists()
    assert "--keep-weights" in (run / WEIGHTS_REMOVED).read_text()
    with pytest.raises(WorkbenchError, match="weights were deleted after the report was built"):
        load_run_model(run)
