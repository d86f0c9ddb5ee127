"""The thinking-ready model: a bundled base model after the warm start (configs/warmstart.yaml, LoRA adapters), cached
like the GGUF conversion. The repository ships the warm start of gemma3-270m (data/warmstart/gemma3-270m: the run's
config and logs and its 15 MB adapter, with checksums), so a fresh clone has it in seconds; a changed recipe, corpus or
base model trains its own once (minutes), saying so first.

    policy = load_model(thinking_ready_model("gemma3-270m"))   # the shipped one, copied into the cache on first use

The cached run directory is a model directory like any other (`load_model(path)` merges its adapter into the base).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import WorkbenchError
from workbench.training.configs import config_from_dict
from workbench.training.warm_start_cache import (
    cached_warm_start,
    warm_base,
    warm_start_config,
    warm_start_key,
    warm_start_problem,
)
from workbench.training.warmstart_trainer import WarmStartTrainer

# seconds a warm-start step takes on 2 cores, the estimate printed before one is trained (only a changed recipe or
# corpus trains one: the default is shipped): the full fine-tune took 15.8 s under the AVX2 emulation (fp32) and 6 s on
# an AMX Xeon (bf16), 2026-12-03; the LoRA recipe 11-12 s on an AVX512-BF16 EPYC (bf16), 2026-12-06
SECONDS_PER_STEP = {"fp32": 16.0, "bf16": 11.0}


def estimated_minutes(steps: int) -> str:
    from workbench.hardware import choose_dtype, resolve_device

    bf16 = choose_dtype("auto", resolve_device("auto")).name == "bfloat16"
    seconds = (
        steps * SECONDS_PER_STEP["bf16" if bf16 else "fp32"] + 60
    )  # plus loading and the one evaluation at the end
    return f"about {max(1, round(seconds / 60))} minutes"


# warm starts shipped with the repository: a LoRA run's directory (its adapter is 15 MB), one per bundled base model
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "data" / "warmstart"
# the files of a run that a shipped warm start keeps (no optimizer, scheduler or RNG state: it is not resumed)
SHIPPED_FILES = ("config.yaml", "run.json", "metrics.jsonl", "summary.json")


def shipped_warm_start(base: str) -> Path:
    """Where the repository ships the warm start of `base` (it may not exist)."""
    return SHIPPED_DIR / base.replace("/", "_").replace("\\", "_").strip("._")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ship_warm_start(run_dir: str | Path, base: str, dest: Path | None = None) -> Path:
    """Copy a finished warm-start run trained with `peft` into the repository (data/warmstart/BASE): its config, logs
    and the adapter of its last checkpoint (in bf16), with a manifest of the cache key it answers for and each file's
    checksum. Measure what ships (benchmarks/thinking_probes.py warm:BASE), not the run it came from.

        python -c "from workbench.training.warm_start import ship_warm_start; ship_warm_start('RUN_DIR', 'gemma3-270m')"
    """
    from workbench.training.checkpoints import latest_checkpoint
    from workbench.training.configs import load_config

    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    if not config.peft:
        raise WorkbenchError(f"{run_dir}: only a LoRA warm start (peft) is small enough to ship")
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None or not (run_dir / "summary.json").exists():
        raise WorkbenchError(f"{run_dir}: not a finished run")
    overrides = {
        k: v
        for k, v in config.to_dict().items()
        if v != warm_start_config(base).to_dict().get(k) and k not in ("output_dir", "progress")
    }
    dest = dest or shipped_warm_start(base)
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "checkpoints" / ckpt.name).mkdir(parents=True)
    for name in SHIPPED_FILES:
        shutil.copy(run_dir / name, dest / name)
    run = json.loads((dest / "run.json").read_text())
    run["model_path"] = base  # the bundled name, not this machine's cache path
    (dest / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    import torch
    from safetensors.torch import load_file, save_file

    # the adapter in bf16: half the bytes in git; merged into the base in fp32 all the same (adapters.merged)
    adapter = load_file(ckpt / "policy.safetensors")
    save_file(
        {k: v.to(torch.bfloat16).contiguous() for k, v in adapter.items()},
        dest / "checkpoints" / ckpt.name / "policy.safetensors",
    )
    state = json.loads((ckpt / "state.json").read_text())
    if "files" in state:  # the sizes of what ships (the bf16 adapter), so the damage check reads them right
        state["files"] = {
            "policy.safetensors": {"bytes": (dest / "checkpoints" / ckpt.name / "policy.safetensors").stat().st_size}
        }
    (dest / "checkpoints" / ckpt.name / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    manifest = {
        "base": base,
        "key": warm_start_key(base, overrides),
        "overrides": overrides,
        "recipe": "configs/warmstart.yaml",
        "files": {f: _sha256(dest / f) for f in files},
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return dest


def _into_place(partial: Path, target: Path) -> None:
    """Rename a finished `partial` directory to `target`: complete or absent, a killed writer leaves only a .tmp
    directory. Another process that put a complete one there first wins; ours is discarded."""
    try:
        os.replace(partial, target)
    except OSError:
        if not (target / "summary.json").exists():
            raise
        shutil.rmtree(partial, ignore_errors=True)


def install_shipped(base: str, overrides: dict[str, Any], target: Path, log=print) -> bool:
    """Put the shipped warm start of `base` into the cache at `target` when it answers for this recipe (same cache key:
    same config, corpus and trainer arithmetic); False when there is none for it. A shipped file whose checksum does
    not match is one error naming it."""
    source = shipped_warm_start(base)
    if not (source / "manifest.json").exists():
        return False
    manifest = json.loads((source / "manifest.json").read_text())
    if manifest.get("key") != target.name.rsplit("-", 1)[-1]:
        return False  # another recipe, corpus or arithmetic: this one is trained
    for name, digest in manifest["files"].items():
        path = source / name
        if not path.is_file() or _sha256(path) != digest:
            raise WorkbenchError(
                f"the shipped warm start is damaged: {path} does not match its checksum in "
                f"{source / 'manifest.json'} (git checkout -- {SHIPPED_DIR.name}, or delete the folder to "
                "train one)"
            )
    partial = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    config_file = partial / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["output_dir"] = str(target)
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    _into_place(partial, target)
    log(
        f"thinking-ready {base}: the warm start shipped in {source.relative_to(SHIPPED_DIR.parents[1])} "
        f"(a LoRA adapter, trained by {manifest['recipe']}) -> {target}"
    )
    return True


def thinking_ready_model(base: str = "gemma3-270m", log=print, **overrides: Any) -> str:
    """The directory of `base` after the warm start (configs/warmstart.yaml): from the cache, else the one shipped with
    the repository (seconds), else trained now (saying first how long it will take). Returns a path that `load_model`
    accepts."""
    target = cached_warm_start(base, overrides)
    if (target / "summary.json").exists():
        problem = warm_start_problem(target)
        if problem is None:
            return str(target)
        log(f"the cached warm start is damaged ({problem}): installing it again")
        shutil.rmtree(target)
    if install_shipped(base, overrides, target, log):
        return str(target)
    config = warm_start_config(base, overrides)
    log(
        f"no cached warm start of {base}: training one now ({config.max_steps} steps, {estimated_minutes(config.max_steps)} "
        f"on this CPU), cached in {target}"
    )
    partial = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    start = time.perf_counter()
    trainer = WarmStartTrainer(
        config_from_dict({**config.to_dict(), "output_dir": str(partial), "progress": True}), log=log
    )  # a notebook's print: plain output, not red stderr boxes
    try:
        trainer.train()
    finally:
        trainer.close()
    config_file = partial / "config.yaml"
    config_file.write_text(config_file.read_text().replace(str(partial), str(target)))  # where it will live
    _into_place(partial, target)
    log(f"warm start trained in {time.perf_counter() - start:.0f} s")
    return str(target)


def resolve_model_name(name: str, log=print) -> str:
    """A model name as `load_model` takes it: `warm:BASE` becomes the cached thinking-ready model of BASE (trained
    first if it is not cached yet); any other name is returned as it is."""
    base = warm_base(name)
    return name if base is None else thinking_ready_model(base, log=log)
