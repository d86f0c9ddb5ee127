"""RLP workbench: sample thoughts on ordinary text and see, token by token, what they are worth.

The names most notebooks need are re-exported here; each lives in a small module of its own.
"""

from workbench.data import (Document, find_document, load_corpus, load_documents, load_thinking_corpus, parse_positions,
                            select_positions, tokenize, tokenize_document)
from workbench.errors import WorkbenchError
from workbench.models import BUNDLED, DEFAULT_MODEL, ModelHandle, load_model, teacher_of
from workbench.probes import ProbeMap, headroom, probe_map, register_probe
from workbench.rewards import RewardMap, TeacherPass, info_gain, reward_map, run_teacher_pass, score_thoughts
from workbench.runs import save_metrics
from workbench.scoring import NoThinkScores, no_think_scores
from workbench.thoughts import SamplingConfig, Thought, ThoughtSampler, ThoughtTemplate

__version__ = "0.1.0"

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
]
