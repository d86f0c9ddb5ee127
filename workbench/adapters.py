"""LoRA adapters with PEFT: `peft: {r: 16, lora_alpha: 32}` in any training config trains low-rank adapters on the
frozen model instead of every weight (a labelled variant of the paper's full fine-tuning).

A run trained with `peft` checkpoints the adapter only (a few MB instead of 1-2 GB of fp32 weights); `load_model(RUN)`
loads the run's base model and merges the adapter into it, so every reader downstream sees a plain transformers model.

    spec = check_peft_spec({"r": 16, "lora_alpha": 32})      # one-line errors on a bad spec, before any model loads
    model = with_adapter(model, spec)                        # PeftModel: only the LoRA matrices train
    tensors = adapter_tensors(model)                         # what a checkpoint keeps
    plain = merged(base_model, spec, tensors)                # base + adapter, merged: a plain model again
    weights = merged_named_tensors(model)                    # theta as a plain model names it (RLP's EMA teacher)

RLP on an adapter keeps the paper's teacher exactly: phi is the EMA of theta = W0 + delta W, and W0 never changes, so
only the adapted weights move; the teacher (and a checkpoint's teacher.safetensors) holds those, the rest is W0.
"""

from __future__ import annotations

from typing import Any

import torch

from workbench.errors import WorkbenchError

# the LoRA settings a config may give, with their types; everything else of peft.LoraConfig keeps peft's default
PEFT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "r": int,
    "lora_alpha": (int, float),
    "lora_dropout": (int, float),
    "target_modules": (str, list),
    "use_rslora": bool,
}
PEFT_DEFAULTS: dict[str, Any] = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}


def check_peft_spec(spec: Any) -> dict[str, Any] | None:
    """The spec with peft's defaults filled in, or None for no adapter; an unknown key or a wrong type is one line."""
    if spec is None or spec == {} or spec is False:
        return None
    if not isinstance(spec, dict):
        raise WorkbenchError(f"peft must be a mapping such as {{r: 16, lora_alpha: 32}}, got {spec!r}")
    unknown = sorted(set(spec) - set(PEFT_FIELDS))
    if unknown:
        raise WorkbenchError(f"peft: unknown field(s) {', '.join(unknown)}; it takes {', '.join(PEFT_FIELDS)}")
    for name, value in spec.items():
        kinds = PEFT_FIELDS[name]
        if isinstance(value, bool) and kinds is not bool or not isinstance(value, kinds):
            raise WorkbenchError(f"peft: {name} has the wrong type: {value!r}")
    out = {**PEFT_DEFAULTS, **spec}
    if out["r"] < 1:
        raise WorkbenchError(f"peft: r must be >= 1, got {out['r']}")
    if not 0 <= out["lora_dropout"] < 1:
        raise WorkbenchError(f"peft: lora_dropout must be in [0, 1), got {out['lora_dropout']}")
    return out


def _lora_config(spec: dict[str, Any]):
    try:
        from peft import LoraConfig
    except ImportError as exc:  # pragma: no cover - peft is a dependency; a hand-made environment may lack it
        raise WorkbenchError("peft: the peft package is not installed (pip install peft)") from exc
    return LoraConfig(task_type="CAUSAL_LM", bias="none", **spec)


def with_adapter(model: torch.nn.Module, spec: dict[str, Any]) -> torch.nn.Module:
    """`model` with fresh LoRA adapters (peft freezes every other weight). Seeded like the rest of the run: the
    adapters' A matrices are drawn from torch's generator, their B matrices start at zero (so step 0 is the base)."""
    from peft import get_peft_model

    return get_peft_model(model, _lora_config(spec))


def adapter_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's weights, by peft's names (what a checkpoint of a `peft` run keeps)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Put a checkpoint's adapter weights into an adapted model; a mismatch is one line naming the file."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, tensors)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in (getattr(result, "missing_keys", []) or []) if "lora_" in k]
    if unexpected or missing:
        raise WorkbenchError(
            f"{where}: adapter does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def merged(
    model: torch.nn.Module, spec: dict[str, Any], tensors: dict[str, torch.Tensor], where: str
) -> torch.nn.Module:
    """`model` (a plain transformers model) with the adapter `tensors` merged into its weights: a plain model again."""
    dtype = next(model.parameters()).dtype
    adapted = with_adapter(model.float(), spec)  # merged in fp32, then rounded once to the model's dtype
    load_adapter_tensors(adapted, {k: v.float() for k, v in tensors.items()}, where)
    plain = adapted.merge_and_unload()
    plain.requires_grad_(False)
    return plain.to(dtype)


def merged_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A frozen plain copy of an adapted model in `dtype`, the adapter merged (what samples and evaluates)."""
    import copy

    clone = copy.deepcopy(model).merge_and_unload()
    clone.to(dtype)
    clone.requires_grad_(False)
    clone.eval()
    return clone


@torch.no_grad()
def merged_named_tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The adapted model's effective weights theta = W0 + scaling * B A, by the names of the plain model (no
    `base_layer`, no `lora_` tensors; a tied head once), detached: a new tensor where an adapter acts, the frozen
    parameter itself elsewhere."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    adapted = {name: module for name, module in base.named_modules() if isinstance(module, LoraLayer)}
    out = []
    for name, param in base.named_parameters():
        if "lora_" in name:
            continue
        module_name, _, leaf = name.rpartition(".base_layer.")
        if leaf == "weight" and module_name in adapted:
            module = adapted[module_name]
            out.append(
                (
                    f"{module_name}.weight",
                    param.detach() + module.get_delta_weight(module.active_adapters[0]).to(param.dtype),
                )
            )
        else:
            out.append((name.replace(".base_layer.", "."), param.detach()))
    return out


def adapted_weight_names(model: torch.nn.Module) -> set[str]:
    """The plain names of the weights an adapter changes (the only ones whose EMA differs from the base's)."""
    from peft.tuners.lora import LoraLayer

    return {
        f"{name}.weight" for name, module in model.get_base_model().named_modules() if isinstance(module, LoraLayer)
    }
