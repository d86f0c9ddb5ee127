"""The thinking-ready model: a bundled base model after the warm start (configs/warmstart.yaml), trained once and
cached (like the GGUF conversion).

    policy = load_model(thinking_ready_model("gemma3-270m"))   # trains configs/warmstart.yaml once (minutes), then cached

The cached run directory is a model directory like any other (`load_model(path)` reads its final weights).
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from workbench.training.configs import config_from_dict
from workbench.training.warm_start_cache import cached_warm_start, warm_base, warm_start_config
from workbench.training.warmstart_trainer import WarmStartTrainer

# seconds a warm-start step took on 2 cores: emulated AVX2 (fp32, 15.8 s) and an AMX Xeon (bf16), 2026-12-03; the
# estimate a notebook prints before it trains one
SECONDS_PER_STEP = {"fp32": 16.0, "bf16": 6.0}


def estimated_minutes(steps: int) -> str:
    from workbench.hardware import choose_dtype, resolve_device

    bf16 = choose_dtype("auto", resolve_device("auto")).name == "bfloat16"
    seconds = steps * SECONDS_PER_STEP["bf16" if bf16 else "fp32"] + 60  # plus loading and the one evaluation at the end
    return f"about {max(1, round(seconds / 60))} minutes"


def thinking_ready_model(base: str = "gemma3-270m", log=print, **overrides: Any) -> str:
    """The directory of `base` after the warm start (configs/warmstart.yaml): from the cache, else trained now
    (saying first how long it will take). Returns a path that `load_model` accepts."""
    target = cached_warm_start(base, overrides)
    if (target / "summary.json").exists():
        return str(target)
    config = warm_start_config(base, overrides)
    log(f"no cached warm start of {base}: training one now ({config.max_steps} steps, {estimated_minutes(config.max_steps)} "
        f"on this CPU), cached in {target}")
    partial = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    start = time.perf_counter()
    trainer = WarmStartTrainer(config_from_dict({**config.to_dict(), "output_dir": str(partial), "progress": True}),
                               log=log)  # a notebook's print: plain output, not red stderr boxes
    try:
        trainer.train()
    finally:
        trainer.close()
    config_file = partial / "config.yaml"
    config_file.write_text(config_file.read_text().replace(str(partial), str(target)))  # where it will live
    try:
        os.replace(partial, target)  # complete or absent: a killed run leaves only a .tmp directory
    except OSError:
        if not (target / "summary.json").exists():
            raise
        shutil.rmtree(partial, ignore_errors=True)
    log(f"warm start trained in {time.perf_counter() - start:.0f} s")
    return str(target)


def resolve_model_name(name: str, log=print) -> str:
    """A model name as `load_model` takes it: `warm:BASE` becomes the cached thinking-ready model of BASE (trained
    first if it is not cached yet); any other name is returned as it is."""
    base = warm_base(name)
    return name if base is None else thinking_ready_model(base, log=log)
