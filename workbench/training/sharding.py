"""Whole tensors from a sharded policy: what training under FSDP2 needs beyond accelerate's `prepare`.

Under FSDP2 (`configs/accelerate/fsdp.yaml`, accelerate's fsdp_version 2) every parameter of the prepared policy is
a DTensor that holds this process's shard. The parts of an RLP step that read weights outside the training
forward/backward need them whole: the bf16 rollout copy that samples and scores thoughts, the fp32 EMA teacher,
the vLLM engine, and checkpoints (which hold whole weights, loadable without a process group). These helpers
gather them. A gather is a collective: every process calls it, in the same order, or training hangs.

Without sharding (one process, DDP) they hand back the parameters themselves: no copies, no communication.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


def _dtensor_type():
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return None
    return DTensor


def is_sharded(model: torch.nn.Module) -> bool:
    """True when some parameter is a DTensor (FSDP2 sharding)."""
    dtensor = _dtensor_type()
    return dtensor is not None and any(isinstance(p, dtensor) for p in model.parameters())


def full_named_tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, whole detached tensor) for every parameter, in `named_parameters()` order (a tied head once)."""
    dtensor = _dtensor_type()
    out = []
    for name, p in model.named_parameters():
        tensor = p.detach()
        if dtensor is not None and isinstance(tensor, dtensor):
            tensor = tensor.full_tensor()  # all-gather of the shards
        out.append((name, tensor))
    return out


def _parameters_to(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast the parameters only. `model.to(bf16)` would also cast the floating-point buffers - the rotary embedding's
    inverse frequencies among them - which `from_pretrained(dtype=bf16)` keeps in fp32: the inference copy then
    placed positions differently from the same weights loaded by `load_model` (up to 1.4e-3 per frequency on
    SmolLM2, enough to change sampled thoughts and a run's step-0 evaluation)."""
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.to(dtype)


def plain_copy(
    model: torch.nn.Module, dtype: torch.dtype, weights: list[tuple[str, torch.Tensor]] | None = None
) -> torch.nn.Module:
    """A frozen, unsharded copy of `model` in `dtype`, on this process's device.

    Unsharded models are deep-copied. FSDP2 modules refuse `deepcopy`, so a sharded model is rebuilt from its
    config (same class, same attention implementation) and given the gathered weights and the buffers (rotary
    tables are non-persistent buffers: not in any state dict). `weights`: already gathered `full_named_tensors(model)`,
    to spare a second gather."""
    if not is_sharded(model):
        clone = copy.deepcopy(model)
    else:
        from transformers import AutoModelForCausalLM

        weights = weights if weights is not None else full_named_tensors(model)
        device = weights[0][1].device
        with torch.device(device):
            clone = AutoModelForCausalLM.from_config(
                model.config, dtype=torch.float32, attn_implementation=model.config._attn_implementation
            )
        targets = dict(clone.named_parameters())
        if list(targets) != [name for name, _ in weights]:
            raise RuntimeError("the rebuilt model's parameters do not match the sharded policy's")
        with torch.no_grad():
            for name, tensor in weights:
                targets[name].copy_(tensor)
            buffers = dict(clone.named_buffers())
            for name, buffer in model.named_buffers():
                buffers[name].copy_(buffer)
    _parameters_to(clone, dtype)
    clone.requires_grad_(False)
    clone.eval()
    return clone


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's whole state dict. Sharded: gathered to CPU on the main process (the others get {})."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # a tied LM head comes back as a second, separate tensor: keep one name per parameter, as unsharded saves do
    first: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        first.setdefault(id(p), name)
    tied = {name for name, p in model.named_parameters(remove_duplicate=False) if first[id(p)] != name}
    return {k: v for k, v in state.items() if k not in tied}


def load_full_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load whole tensors into `model` (each process keeps its shard); returns (missing, unexpected) keys."""
    if not is_sharded(model):
        return model.load_state_dict(state, strict=False)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    result = set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))
    return list(result.missing_keys), list(result.unexpected_keys)


def full_optimizer_state(model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    """The optimizer's state dict. Sharded: whole tensors keyed by parameter name, on the main process."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(model: torch.nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    optimizer = getattr(optimizer, "optimizer", optimizer)
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
