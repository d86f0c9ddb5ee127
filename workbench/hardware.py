"""What this machine computes fast: the CPU's kind, and the dtype `"auto"` means here.

bf16 is ~4x faster than fp32 on a CPU with AMX, about as fast or slower on one with only AVX512-BF16,
and *slower* on an AVX2-only CPU, which has no native bf16 arithmetic: a 2048^2 matmul ~100x slower (under
1 GFLOP/s), a Gemma 3 270M forward 2-5x slower (measured on an AMD EPYC). So the workbench never hard-codes a dtype: `dtype="auto"` (the default everywhere)
chooses per device, and every run records the choice, the reason and the CPU capability.

The rule, in order:
- CUDA: bfloat16 where the GPU supports it, else float32 (Gemma 3 overflows float16).
- MPS: float32 (bf16 depends on the macOS version and chip; float16 overflows Gemma 3).
- CPU whose torch kernels run below AVX512 (AVX2, or a capability lowered with ATEN_CPU_CAPABILITY):
  float32, no probe needed.
- CPU with AMX-BF16 (and nothing lowering oneDNN's instruction set): bfloat16.
- anything else with some bf16 support (AVX512-BF16 without AMX, ARM's bf16, ONEDNN_MAX_CPU_ISA set):
  ambiguous, so a sub-second timed probe decides: bfloat16 only if its matmul beats float32's by 1.3x.
- otherwise float32.

`WORKBENCH_AUTO_DTYPE=float32` (or bfloat16, float16) fixes what "auto" means, e.g. for CI; `workbench run`
sets it for the notebook kernel from its own decision so that params.json and the notebook agree.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.errors import WorkbenchError

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
DTYPE_NAMES = ("auto", *DTYPES)
AUTO_ENV = "WORKBENCH_AUTO_DTYPE"
# bf16 must beat fp32 by this much in the probe to be chosen (it also halves memory, but speed is what users feel)
PROBE_MARGIN = 1.3


@dataclass(frozen=True)
class DtypeChoice:
    """A resolved dtype with the reason, as recorded in params.json / run.json."""

    dtype: torch.dtype
    requested: str  # what the user asked for: "auto" or an explicit dtype name
    reason: str
    device: str
    cpu_capability: str

    @property
    def name(self) -> str:
        return str(self.dtype).replace("torch.", "")

    def as_dict(self) -> dict[str, str]:
        return {
            "dtype": self.name,
            "dtype_requested": self.requested,
            "dtype_reason": self.reason,
            "device": self.device,
            "cpu_capability": self.cpu_capability,
            "cpu": cpu_kind(),
        }

    def describe(self) -> str:
        if self.requested == "auto":
            return f"dtype {self.name} (chosen automatically: {self.reason})"
        return f"dtype {self.name} ({self.reason})"


# --------------------------------------------------------------------------- the CPU


def cpu_capability() -> str:
    """torch's ATen CPU capability (AVX512, AVX2, DEFAULT, SVE256, ...): which kernels torch runs."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # very old torch or an exotic build
        return "unknown"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (x86 'flags', ARM 'Features'); empty where unreadable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_kind() -> str:
    """One line naming the CPU and what it computes natively, e.g. 'Intel Xeon (AVX512, AVX512-BF16, no AMX)'."""
    flags = cpu_flags()
    parts = [f"torch capability {cpu_capability()}"]
    if flags:
        if platform.machine() in ("x86_64", "AMD64", "i686"):
            parts.append("AVX512-BF16" if "avx512_bf16" in flags else "no AVX512-BF16")
            parts.append("AMX-BF16" if "amx_bf16" in flags else "no AMX")
        elif "bf16" in flags:
            parts.append("bf16")
    lowered = [
        f"{k}={os.environ[k]}"
        for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
        if os.environ.get(k)
    ]
    if lowered:
        parts.append("lowered by " + " ".join(lowered))
    return f"{cpu_model()} ({', '.join(parts)})"


def _onednn_isa_limited() -> bool:
    return bool(os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA"))


# --------------------------------------------------------------------------- the probe


def _matmul_seconds(dtype: torch.dtype, m: int, k: int, n: int, repeats: int) -> float:
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up kernels and allocations
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=1)
def bf16_speedup() -> float:
    """How much faster a bf16 matmul runs than an fp32 one on this CPU (>1: faster), in well under a second.

    A small shape first, so a CPU that emulates bf16 (matmuls ~100x slower) is caught in milliseconds; then an
    LM-head-like shape (few rows, wide output), best of a few repeats, fp32 and bf16 interleaved."""
    with torch.inference_mode():
        small = _matmul_seconds(torch.float32, 64, 256, 256, 2), _matmul_seconds(torch.bfloat16, 64, 256, 256, 2)
        if small[1] > 4 * small[0]:
            return small[0] / small[1]
        fp32 = bf16 = float("inf")
        for _ in range(2):
            fp32 = min(fp32, _matmul_seconds(torch.float32, 128, 640, 4096, 2))
            bf16 = min(bf16, _matmul_seconds(torch.bfloat16, 128, 640, 4096, 2))
    return fp32 / bf16


# --------------------------------------------------------------------------- the choice


def _cpu_choice() -> tuple[torch.dtype, str]:
    cap = cpu_capability()
    flags = cpu_flags()
    x86 = platform.machine() in ("x86_64", "AMD64", "i686")
    if x86 and not cap.startswith("AVX512"):
        return torch.float32, f"CPU capability {cap}: no native bf16 (a model forward runs 2-5x slower in bf16 there)"
    if "amx_bf16" in flags and not _onednn_isa_limited():
        return torch.bfloat16, f"CPU capability {cap} with AMX-BF16: bf16 matmuls ~4x faster than float32"
    has_bf16 = "avx512_bf16" in flags or "bf16" in flags or _onednn_isa_limited() or not flags
    if not has_bf16:
        return torch.float32, f"CPU capability {cap} without bf16 instructions"
    speedup = bf16_speedup()
    what = ("AVX512-BF16 without AMX" if "avx512_bf16" in flags else "bf16 support unclear") + f" (capability {cap})"
    if speedup >= PROBE_MARGIN:
        return torch.bfloat16, f"{what}; timed probe: bf16 matmul {speedup:.2f}x float32's speed"
    return torch.float32, f"{what}; timed probe: bf16 matmul only {speedup:.2f}x float32's speed"


@functools.lru_cache(maxsize=8)
def auto_dtype(device_type: str = "cpu") -> tuple[torch.dtype, str]:
    """(dtype, reason) that `"auto"` means on this device type."""
    forced = os.environ.get(AUTO_ENV, "").strip()
    if forced:
        if forced not in DTYPES:
            raise WorkbenchError(f"{AUTO_ENV}={forced!r}: expected one of {', '.join(DTYPES)}")
        # `workbench run` passes its own decision and reason to the notebook kernel this way
        return DTYPES[forced], os.environ.get(AUTO_ENV + "_REASON") or f"{AUTO_ENV}={forced} in the environment"
    if device_type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, f"CUDA GPU {torch.cuda.get_device_name()} computes bf16 natively"
        return torch.float32, "CUDA GPU without bf16 (float16 overflows Gemma 3's activations)"
    if device_type == "mps":
        return (
            torch.float32,
            "Apple MPS: float32 (bf16 depends on the macOS version and chip; float16 overflows Gemma 3)",
        )
    if device_type == "cpu":
        return _cpu_choice()
    return torch.float32, f"device {device_type}: float32 is the safe default"


def choose_dtype(dtype: str | torch.dtype | None, device: torch.device | str = "cpu") -> DtypeChoice:
    """Resolve a requested dtype ("auto", None, a name or a torch.dtype) on `device`."""
    device_type = torch.device(device).type
    if isinstance(dtype, torch.dtype):
        return DtypeChoice(dtype, str(dtype).replace("torch.", ""), "requested", device_type, cpu_capability())
    if dtype in (None, "auto"):
        resolved, reason = auto_dtype(device_type)
        return DtypeChoice(resolved, "auto", reason, device_type, cpu_capability())
    if dtype not in DTYPES:
        raise WorkbenchError(f"unknown dtype {dtype!r}; use one of: {', '.join(DTYPE_NAMES)}")
    note = "requested"
    if DTYPES[dtype] == torch.bfloat16 and device_type == "cpu":
        auto, _ = auto_dtype("cpu")
        if auto != torch.bfloat16:
            note = "requested; this CPU has no fast bf16: 'auto' (float32) may be many times faster"
    return DtypeChoice(DTYPES[dtype], dtype, note, device_type, cpu_capability())


def auto_mixed_precision(device: torch.device | str = "cpu") -> tuple[str, str]:
    """What `mixed_precision: auto` means for training: 'bf16' autocast where bf16 is native here, else 'no'."""
    dtype, reason = auto_dtype(torch.device(device).type)
    return ("bf16" if dtype == torch.bfloat16 else "no"), reason


def resolve_device(device: str | None) -> torch.device:
    """'auto' (or None): CUDA, then Apple MPS, then the CPU."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise WorkbenchError(f"unknown device {device!r}: {exc}") from exc
