"""RLP workbench: sample thoughts on ordinary text and see, token by token, what they are worth.

The names most notebooks need are re-exported here; each lives in a small module of its own. The engine (sampling and
scoring) is `workbench.engine`, training runs are `workbench.training`; the training names below load on first use
(`wb.train`, `wb.load_config`, `wb.read_metrics`, ...), so no module of the package imports the package back.
"""

from importlib import import_module
from typing import Any

from workbench.data import (
    Document,
    find_document,
    load_corpus,
    load_documents,
    load_thinking_corpus,
    parse_positions,
    select_positions,
    tokenize,
    tokenize_document,
)
from workbench.errors import WorkbenchError

__version__ = "0.1.0"

# name -> module, imported when the name is first used (PEP 562): `import workbench` (and so the CLI's start, `workbench
# --help`, a parameter check) does not import torch and transformers until a name that needs them is used
_LAZY = {
    "ThoughtSampler": "workbench.engine.sampler",
    "NoThinkScores": "workbench.engine.scorer",
    "no_think_scores": "workbench.engine.scorer",
    "SamplingConfig": "workbench.engine.thought",
    "Thought": "workbench.engine.thought",
    "ThoughtTemplate": "workbench.engine.thought",
    "BUNDLED": "workbench.models",
    "DEFAULT_MODEL": "workbench.models",
    "ModelHandle": "workbench.models",
    "load_model": "workbench.models",
    "teacher_of": "workbench.models",
    "ProbeMap": "workbench.probes",
    "headroom": "workbench.probes",
    "probe_map": "workbench.probes",
    "register_probe": "workbench.probes",
    "RewardMap": "workbench.rewards",
    "TeacherPass": "workbench.rewards",
    "info_gain": "workbench.rewards",
    "reward_map": "workbench.rewards",
    "run_teacher_pass": "workbench.rewards",
    "score_thoughts": "workbench.rewards",
    "save_metrics": "workbench.run_dirs",
    "make_sampler": "workbench.engine.backends",
    "load_config": "workbench.training.configs",
    "train": "workbench.training.launch",
    "start_background": "workbench.training.launch",
    "read_metrics": "workbench.training.trainer",
    "load_trained": "workbench.training.trainer",
    "thinking_ready_model": "workbench.training.warm_start",
    "resolve_model_name": "workbench.training.warm_start",
    "run_arena": "workbench.arena",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


__all__ = [
    "BUNDLED",
    "DEFAULT_MODEL",
    "Document",
    "ModelHandle",
    "NoThinkScores",
    "ProbeMap",
    "RewardMap",
    "SamplingConfig",
    "TeacherPass",
    "Thought",
    "ThoughtSampler",
    "ThoughtTemplate",
    "WorkbenchError",
    "find_document",
    "headroom",
    "info_gain",
    "load_corpus",
    "load_documents",
    "load_model",
    "no_think_scores",
    "parse_positions",
    "probe_map",
    "register_probe",
    "reward_map",
    "run_teacher_pass",
    "save_metrics",
    "score_thoughts",
    "select_positions",
    "teacher_of",
    "tokenize",
    "tokenize_document",
    "load_thinking_corpus",
    *_LAZY,
]
