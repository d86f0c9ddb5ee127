"""The thinking-ready model: a bundled base model after the warm start, trained once and cached, and the probes that
show whether it reads its thoughts.

    policy = load_model(thinking_ready_model("gemma3-270m"))   # trains configs/warmstart.yaml once (minutes), then cached
    answer_probes(policy, documents)                              # probe families at the marked answers

The cache key is the base model, the warm-start config and the corpus bytes, so a changed recipe trains anew; the
cached run directory is a model directory like any other (`load_model(path)` reads its final weights).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from workbench.data import Document, DocumentIds, data_dir, tokenize_document
from workbench.errors import WorkbenchError
from workbench.models import ModelHandle, cache_dir
from workbench.probes import ProbeContext, ProbeMap, probe_map
from workbench.thoughts import SamplingConfig, ThoughtTemplate

WARMSTART_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "warmstart.yaml"
# seconds a warm-start step took on a 2-core AVX2 CPU (fp32) and on an AMX Xeon (bf16); the estimate a notebook prints
SECONDS_PER_STEP = {"fp32": 22.0, "bf16": 11.0}


def warm_start_config(base: str, overrides: dict[str, Any] | None = None):
    """configs/warmstart.yaml with the base model and any overrides (e.g. max_steps) set."""
    from workbench.train_config import load_config

    return load_config(WARMSTART_CONFIG, {"model": base, **(overrides or {})})


def warm_start_key(base: str, overrides: dict[str, Any] | None = None) -> str:
    """What the cached warm start depends on: every field of its config that changes the numbers, and the corpus."""
    h = hashlib.sha256(warm_start_config(base, overrides).fingerprint().encode())
    for split in ("train", "eval"):
        h.update((data_dir() / "thinking" / f"{split}.jsonl").read_bytes())
    return h.hexdigest()[:12]


def cached_warm_start(base: str, overrides: dict[str, Any] | None = None) -> Path:
    """Where the warm start of `base` is (or will be) cached."""
    safe = base.replace("/", "_").replace("\\", "_").strip("._") or "model"
    return cache_dir() / "warmstart" / f"{safe}-{warm_start_key(base, overrides)}"


def estimated_minutes(steps: int) -> str:
    from workbench.hardware import choose_dtype, resolve_device

    bf16 = choose_dtype("auto", resolve_device("auto")).name == "bfloat16"
    seconds = steps * SECONDS_PER_STEP["bf16" if bf16 else "fp32"] + 60  # plus loading and two evaluations
    return f"about {max(1, round(seconds / 60))} minutes"


def thinking_ready_model(base: str = "gemma3-270m", log=print, **overrides: Any) -> str:
    """The directory of `base` after the warm start (configs/warmstart.yaml): from the cache, else trained now
    (saying first how long it will take). Returns a path that `load_model` accepts."""
    target = cached_warm_start(base, overrides)
    if (target / "summary.json").exists():
        return str(target)
    from workbench.launch import train

    config = warm_start_config(base, overrides)
    log(f"no cached warm start of {base}: training one now ({config.max_steps} steps, {estimated_minutes(config.max_steps)} "
        f"on this CPU), cached in {target}")
    partial = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    start = time.perf_counter()
    train(config, output_dir=str(partial), progress=True)
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


WARM_PREFIX = "warm:"


def resolve_model_name(name: str, log=print) -> str:
    """A model name as `load_model` takes it: `warm:BASE` becomes the cached thinking-ready model of BASE (trained
    first if it is not cached yet); any other name is returned as it is."""
    if isinstance(name, str) and name.startswith(WARM_PREFIX):
        base = name[len(WARM_PREFIX):]
        if not base:
            raise WorkbenchError("warm: needs a base model, e.g. warm:gemma3-270m")
        return thinking_ready_model(base, log=log)
    return name


# --------------------------------------------------------------------------- probes at the answers


def corpus_thought_probe(doc: Document, ids: DocumentIds, style: str):
    """A probe family that writes the corpus's own thought of `style` before each marked answer (scratch: a correct
    scratchpad; restate: a restatement that computes nothing)."""
    if len(doc.answer_thoughts) != len(doc.answers):
        raise WorkbenchError(f"document {doc.id} has no per-answer thoughts (answer_thoughts); use the thinking corpus")
    by_position = {t: dict(options)[style] for t, options in zip(ids.marked, doc.answer_thoughts)}

    def probe(ctx: ProbeContext) -> str:
        return by_position[ctx.position]

    return probe


def answer_probes(policy: ModelHandle, documents: Sequence[Document], teacher: ModelHandle | None = None,
                  families: Sequence[str] = ("empty", "leak", "neutral"), corpus_styles: Sequence[str] = ("scratch", "restate"),
                  template: ThoughtTemplate = ThoughtTemplate(), max_tokens: int | None = 512,
                  progress: bool = False) -> tuple[pd.DataFrame, list[ProbeMap]]:
    """Probe thoughts at every marked answer of `documents`: the registered `families` and the corpus's own thoughts
    (`corpus_styles`). Returns the per-family summary over all documents (mean reward, share positive, mean content
    gain, ...) and each document's ProbeMap."""
    teacher = teacher or policy
    maps = []
    for doc in documents:
        ids = tokenize_document(policy.tokenizer, doc, max_tokens)
        if not ids.marked:
            raise WorkbenchError(f"document {doc.id} has no marked answers")
        fams: dict[str, Any] = {name: None for name in families}
        fams.update({style: corpus_thought_probe(doc, ids, style) for style in corpus_styles})
        maps.append(probe_map(policy, teacher, ids, list(ids.marked), fams, template=template,
                              config=SamplingConfig(thought_tokens=64), progress=progress))
    frame = pd.concat([m.frame() for m in maps], ignore_index=True)
    names = list(maps[0].families)
    summary = frame.groupby("family", sort=False).agg(
        mean_reward=("reward", "mean"),
        share_positive=("reward", lambda r: float((r > 0).mean())),
        mean_content_gain=("content_gain", "mean"),
        share_content_gain_positive=("content_gain", lambda g: float((g > 0).mean())),
        positions=("reward", "size"),
    ).loc[names]
    return summary, maps


def best_family_shares(maps: Sequence[ProbeMap]) -> pd.Series:
    """At how many answers each family has the highest reward ('empty' best = no thought beats every thought)."""
    tables = pd.concat([m.table("reward") for m in maps], ignore_index=True)
    return tables.idxmax(axis=1).value_counts(normalize=True).reindex(tables.columns, fill_value=0.0)
