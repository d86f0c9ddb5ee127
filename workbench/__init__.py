"""RLP workbench: sample thoughts on ordinary text and see, token by token, what they are worth.

The names most notebooks need are re-exported here; each lives in a small module of its own.
"""

from workbench.data import Document, find_document, load_corpus, load_documents, parse_positions, select_positions, tokenize
from workbench.errors import WorkbenchError
from workbench.models import BUNDLED, DEFAULT_MODEL, ModelHandle, load_model, teacher_of
from workbench.rewards import RewardMap, info_gain, reward_map
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
    "RewardMap",
    "SamplingConfig",
    "Thought",
    "ThoughtSampler",
    "ThoughtTemplate",
    "WorkbenchError",
    "find_document",
    "info_gain",
    "load_corpus",
    "load_documents",
    "load_model",
    "no_think_scores",
    "parse_positions",
    "reward_map",
    "save_metrics",
    "select_positions",
    "teacher_of",
    "tokenize",
]
