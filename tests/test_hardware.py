"""dtype="auto": bf16 only where the hardware computes it natively, decided from the capability or a timed probe."""

from __future__ import annotations

import pytest
import torch

from workbench import hardware
from workbench.errors import WorkbenchError


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be a CPU: set(capability, flags, machine, probe result); the decision cache is cleared around it."""
    probes = []

    def pretend(capability: str, flags: set[str], machine: str = "x86_64", speedup: float | None = None) -> list:
        monkeypatch.setattr(hardware, "cpu_capability", lambda: capability)
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(hardware.platform, "machine", lambda: machine)

        def probe() -> float:
            probes.append(1)
            if speedup is None:
                raise AssertionError("the timed probe must not run for this CPU")
            return speedup

        monkeypatch.setattr(hardware, "bf16_speedup", probe)
        return probes

    for var in (hardware.AUTO_ENV, "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(var, raising=False)
    hardware.auto_dtype.cache_clear()
    yield pretend
    hardware.auto_dtype.cache_clear()


def test_avx2_cpu_gets_float32_without_a_probe(cpu):
    cpu("AVX2", {"avx2", "fma"})
    choice = hardware.choose_dtype("auto", "cpu")
    assert choice.dtype == torch.float32 and "AVX2" in choice.reason and choice.requested == "auto"
    assert choice.as_dict()["cpu_capability"] == "AVX2"


def test_lowered_capability_wins_over_the_flags(cpu):
    """ATEN_CPU_CAPABILITY=avx2 on an AMX machine: torch runs AVX2 kernels, so bf16 is not native any more."""
    cpu("AVX2", {"avx512_bf16", "amx_bf16", "avx2"})
    assert hardware.choose_dtype("auto").dtype == torch.float32


def test_amx_cpu_gets_bfloat16_without_a_probe(cpu):
    cpu("AVX512", {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    choice = hardware.choose_dtype("auto")
    assert choice.dtype == torch.bfloat16 and "AMX" in choice.reason


@pytest.mark.parametrize("speedup, expected", [(2.5, torch.bfloat16), (0.6, torch.float32), (1.1, torch.float32)])
def test_avx512_bf16_without_amx_is_decided_by_the_probe(cpu, speedup, expected):
    probes = cpu("AVX512", {"avx512f", "avx512_bf16"}, speedup=speedup)
    choice = hardware.choose_dtype("auto")
    assert choice.dtype == expected and "probe" in choice.reason and probes == [1]
    hardware.choose_dtype("auto")
    assert probes == [1], "the decision is made once per process"


def test_onednn_isa_limit_makes_even_amx_ambiguous(cpu, monkeypatch):
    cpu("AVX512", {"avx512_bf16", "amx_bf16"}, speedup=0.01)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert hardware.choose_dtype("auto").dtype == torch.float32


def test_arm_with_bf16_is_probed_and_without_it_is_float32(cpu):
    cpu("DEFAULT", {"fp", "asimd", "bf16"}, machine="aarch64", speedup=1.8)
    assert hardware.choose_dtype("auto").dtype == torch.bfloat16
    hardware.auto_dtype.cache_clear()
    cpu("DEFAULT", {"fp", "asimd"}, machine="aarch64")
    assert hardware.choose_dtype("auto").dtype == torch.float32


def test_environment_fixes_what_auto_means(cpu, monkeypatch):
    cpu("AVX512", {"avx512_bf16", "amx_bf16"})
    monkeypatch.setenv(hardware.AUTO_ENV, "float32")
    monkeypatch.setenv(hardware.AUTO_ENV + "_REASON", "decided by the parent process")
    choice = hardware.choose_dtype("auto")
    assert choice.dtype == torch.float32 and choice.reason == "decided by the parent process"
    hardware.auto_dtype.cache_clear()
    monkeypatch.setenv(hardware.AUTO_ENV, "float8")
    with pytest.raises(WorkbenchError, match=hardware.AUTO_ENV):
        hardware.choose_dtype("auto")


def test_explicit_dtypes_still_work_and_warn_when_slow(cpu):
    cpu("AVX2", {"avx2"})
    assert hardware.choose_dtype("float32").dtype == torch.float32
    bf16 = hardware.choose_dtype("bfloat16")
    assert bf16.dtype == torch.bfloat16 and bf16.requested == "bfloat16" and "faster" in bf16.reason
    assert hardware.choose_dtype(torch.float16).dtype == torch.float16
    with pytest.raises(WorkbenchError, match="unknown dtype 'int3'"):
        hardware.choose_dtype("int3")


def test_mixed_precision_follows_the_dtype_decision(cpu):
    cpu("AVX2", {"avx2"})
    assert hardware.auto_mixed_precision("cpu")[0] == "no"
    hardware.auto_dtype.cache_clear()
    cpu("AVX512", {"amx_bf16", "avx512_bf16"})
    assert hardware.auto_mixed_precision("cpu")[0] == "bf16"


def test_probe_measures_a_ratio():
    hardware.bf16_speedup.cache_clear()
    assert 0 < hardware.bf16_speedup() < 100
