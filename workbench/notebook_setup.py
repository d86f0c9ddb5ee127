"""The first code cell of every curated notebook, in one place:

    S = setup(globals(), PARAMETER_NAMES)                  # checks every parameter before anything heavy runs
    policy, teacher, doc, ids = S.policy, S.teacher, S.doc, S.ids

It validates the parameters (`params.validate`: a bad value stops with one line, not a traceback halfway through), sets
up plotly for JupyterLab and the exported HTML, and - when the notebook has `model` / `document` parameters - loads the
policy, its EMA teacher (at step 0 the policy itself) and the document's token ids, and says what it loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench import work
from workbench.data import Document, DocumentIds, find_document, tokenize_document
from workbench.models import ModelHandle, load_model, teacher_of
from workbench.params import validate
from workbench.run_dirs import new_run_dir
from workbench.viz import setup_notebook


@dataclass
class NotebookSetup:
    """What the setup cell made: the validated parameters and, where asked for, the models and the document."""

    params: dict[str, Any]
    policy: ModelHandle | None = None
    teacher: ModelHandle | None = None
    doc: Document | None = None
    ids: DocumentIds | None = None

    def run_dir(self, name: str) -> Path:
        """The notebook's run directory: the `run_dir` parameter (set by `workbench run`), else a new runs/<name>-<time>."""
        given = self.params.get("run_dir") or ""
        return Path(given) if given else new_run_dir(name)


def setup(namespace: dict[str, Any], parameter_names: Iterable[str], load: bool = True) -> NotebookSetup:
    """Validate the notebook's parameters (the names in `parameter_names`, read from `namespace`, i.e. `globals()`);
    with `load` and a `model` parameter, load the policy (in the `dtype` parameter, default auto) and its teacher, and
    with a `document` parameter, its ids (cut to `max_tokens`, marked answers kept)."""
    setup_notebook()
    work.reset()  # the notebook's counted work starts here (workbench/work.py; saved with its metrics)
    names = set(parameter_names)
    params = validate({k: v for k, v in dict(namespace).items() if k in names})
    out = NotebookSetup(params)
    if not load or "model" not in params:
        return out
    out.policy = load_model(params["model"], dtype=params.get("dtype", "auto"))
    out.teacher = teacher_of(out.policy)  # RLP's EMA teacher; at step 0 it *is* the policy (shared weights)
    print(f"policy {out.policy.label}, teacher {out.teacher.label}; {out.policy.dtype_choice.describe()}")
    if "document" in params:
        out.doc = find_document(params["document"])
        out.ids = tokenize_document(out.policy.tokenizer, out.doc, params.get("max_tokens"))
        print(f"document {out.doc.id!r} ({out.doc.kind}: {out.doc.title}), {len(out.ids)} tokens")
    return out
