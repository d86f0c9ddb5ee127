"""Choosing a sampling backend: `make_sampler(policy, template, config, backend=...)`.

    sampler = make_sampler(policy, ThoughtTemplate(), SamplingConfig(G=4))                  # transformers
    sampler = make_sampler(policy, ThoughtTemplate(), SamplingConfig(G=4), backend="vllm")   # a vLLM engine

Both samplers have one interface (`sample`, `score`, `with_config`); the vLLM one is imported only when asked for,
so a machine without vLLM never loads it.
"""

from __future__ import annotations

from typing import Any

from workbench.engine.sampler import ThoughtSampler
from workbench.engine.thought import SamplingConfig, ThoughtTemplate
from workbench.errors import WorkbenchError
from workbench.models import ModelHandle

BACKENDS = ("transformers", "vllm")


def backend_unavailable(backend: str) -> str | None:
    """Why `backend` cannot run here, or None when it can."""
    if backend == "transformers":
        return None
    if backend == "vllm":
        from workbench.engine.vllm_backend import vllm_unavailable

        return vllm_unavailable()
    return f"unknown sampling backend {backend!r}; choose from {', '.join(BACKENDS)}"


def make_sampler(
    policy: ModelHandle,
    template: ThoughtTemplate = ThoughtTemplate(),
    config: SamplingConfig = SamplingConfig(),
    max_rows: int = 256,
    backend: str = "transformers",
    **backend_options: Any,
) -> ThoughtSampler:
    """A thought sampler on `backend` ("transformers" or "vllm"). `backend_options` go to the vLLM sampler
    (`engine`: a running VLLMEngine to reuse, `scorer`: "transformers" or "vllm"); the transformers sampler has
    none."""
    reason = backend_unavailable(backend)
    if reason:
        raise WorkbenchError(reason)
    if backend == "transformers":
        if backend_options:
            raise WorkbenchError(f"the transformers sampler takes no {', '.join(sorted(backend_options))}")
        return ThoughtSampler(policy, template, config, max_rows)
    from workbench.engine.vllm_backend import VLLMThoughtSampler

    return VLLMThoughtSampler(policy, template, config, max_rows, **backend_options)
