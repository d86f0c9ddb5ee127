"""A small offline multiple-choice evaluation, scored the way lm-evaluation-harness scores one.

Each choice is scored by the summed log-probability of the continuation " " + choice after the prompt
"Question: {question}\nAnswer:". `acc` picks the choice with the highest summed log-prob; `acc_norm` divides
it by the choice's length in characters first (lm-eval's `acc_norm`; for the ASCII choices we ship that is
also the byte length). The token ids follow lm-eval's rule for causal models: encode context + continuation
and the context alone (both with the tokenizer's own special tokens, so Gemma's <bos> comes first), and take
the continuation as the tail of the whole encoding after the context's length.

`lm_eval_run` runs lm-evaluation-harness itself (an optional dependency: pip install lm-eval) on the same
model handle, with our task registered as `rlp_workbench_mc` and any hub task passed through by name.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from workbench.data import _read_text, data_dir, jsonl_objects
from workbench.engine.scorer import head_stats, split_by_lengths
from workbench.errors import WorkbenchError
from workbench.models import ModelHandle

MC_TASK_FILE = "science_math_mc.jsonl"
LM_EVAL_TASK = "rlp_workbench_mc"
LM_EVAL_YAML = "rlp_workbench_mc.yaml"
PROMPT = "Question: {question}\nAnswer:"
TARGET_DELIMITER = " "


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question; `answer` is the index of the right choice."""

    id: str
    question: str
    choices: tuple[str, ...]
    answer: int
    topic: str = ""

    @property
    def context(self) -> str:
        return PROMPT.format(question=self.question)


def mc_task_path() -> Path:
    """The shipped task: data/mc/science_math_mc.jsonl (40 items; math, science, code, prose)."""
    return data_dir() / "mc" / MC_TASK_FILE


def _parse_item(obj: object, where: str, default_id: str) -> MCItem:
    if not isinstance(obj, dict):
        raise WorkbenchError(f"{where} must be a JSON object with question, choices and answer")
    question, choices, answer = obj.get("question"), obj.get("choices"), obj.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise WorkbenchError(f'{where} needs a non-empty string field "question"')
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise WorkbenchError(f'{where} needs "choices": a list of at least two non-empty strings')
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise WorkbenchError(f'{where} needs "answer": an integer index from 0 to {len(choices) - 1}')
    return MCItem(
        id=str(obj.get("id", default_id)),
        question=question,
        choices=tuple(choices),
        answer=answer,
        topic=str(obj.get("topic", "")),
    )


def load_mc_task(path: str | Path | None = None) -> list[MCItem]:
    """Multiple-choice items from a .jsonl file, one object per line:
    {"id": ..., "question": ..., "choices": [...], "answer": <index>, "topic": ...}.

    With no path, the shipped task (`mc_task_path()`).
    """
    path = mc_task_path() if path is None else Path(path).expanduser()
    text = _read_text(path)
    items: list[MCItem] = []
    seen: set[str] = set()
    for lineno, obj in jsonl_objects(path, text):
        item = _parse_item(obj, f"{path}:{lineno}", f"{path.stem}-{lineno}")
        if item.id in seen:
            raise WorkbenchError(f"{path}:{lineno} repeats the id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise WorkbenchError(f"{path} holds no multiple-choice items")
    return items


# --------------------------------------------------------------------------- scoring


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation ids, split as lm-eval splits them for causal models.

    Trailing spaces of the context move to the continuation; the whole string and the context are encoded
    with the tokenizer's defaults (Gemma's tokenizer adds <bos> to both); the continuation is the tail of
    the whole encoding after the context's length.
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = list(tokenizer(context + continuation).input_ids)
    context_ids = list(tokenizer(context).input_ids)
    continuation_ids = whole[len(context_ids) :]
    if not context_ids or not continuation_ids:
        raise WorkbenchError(f"cannot score {continuation!r} after {context!r}: it encodes to no tokens")
    return context_ids, continuation_ids


def _batch_logprobs(
    model: torch.nn.Module, rows: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> list[list[float]]:
    """Per-token log-probs of each row's continuation, from one right-padded forward pass.

    Right padding needs no attention mask: a causal model never lets a real position see the padding after
    it. Only the positions that predict continuation tokens go through the LM head (Gemma's vocabulary has
    262k entries): the body's hidden states at exactly those (row, position) pairs, gathered, then the head once.
    Log-probs are computed in float32.
    """
    inputs = [ctx + cont for ctx, cont in rows]
    length = max(len(ids) for ids in inputs) - 1
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    for i, ids in enumerate(inputs):
        input_ids[i, : len(ids) - 1] = torch.tensor(ids[:-1])
    device = next(model.parameters()).device
    # position p predicts token p + 1: row i needs positions len(ctx) - 1 ... len(ctx) + len(cont) - 2
    row_i = [i for i, (ctx, cont) in enumerate(rows) for _ in cont]
    pos_i = [len(ctx) - 1 + j for ctx, cont in rows for j in range(len(cont))]
    targets = torch.tensor([t for _, cont in rows for t in cont], device=device)
    if getattr(model, "base_model", None) is not model and model.get_output_embeddings() is not None:
        hidden = model.base_model(input_ids=input_ids.to(device)).last_hidden_state
        target_z, lse, _ = head_stats(model, hidden[row_i, pos_i], targets)
        flat = (target_z - lse).tolist()
    else:  # a model without a separate body: its logits at every position
        z = model(input_ids=input_ids.to(device)).logits[row_i, pos_i].float()
        flat = (z.gather(-1, targets[:, None])[:, 0] - z.logsumexp(-1)).tolist()
    return split_by_lengths(flat, [len(cont) for _, cont in rows])


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # the first maximum, as numpy's argmax


@torch.inference_mode()
def mc_accuracy(handle: ModelHandle, items: Sequence[MCItem], batch_size: int = 16) -> dict:
    """Accuracy of `handle` on multiple-choice items, lm-eval style (zero-shot, summed log-probs).

    `batch_size` counts sequences (one per choice) per forward pass; rows are sorted by length so a batch
    needs little padding. Returns {"acc", "acc_norm", "n", "by_topic", "per_item"}; each per-item entry has
    the choices' summed log-probs (`logprobs`), their token counts, `pred`, `pred_norm` and whether each is right.
    """
    if not items:
        raise WorkbenchError("mc_accuracy needs at least one item")
    if batch_size < 1:
        raise WorkbenchError(f"batch_size must be at least 1, got {batch_size}")
    tokenizer = handle.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = []  # (item index, choice index, context ids, continuation ids)
    for i, item in enumerate(items):
        for j, choice in enumerate(item.choices):
            rows.append((i, j, *encode_pair(tokenizer, item.context, TARGET_DELIMITER + choice)))
    rows.sort(key=lambda r: (len(r[2]) + len(r[3]), len(r[2])))
    token_logps: dict[tuple[int, int], list[float]] = {}
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        scores = _batch_logprobs(handle.model, [(r[2], r[3]) for r in batch], pad_id)
        for (i, j, _, _), logps in zip(batch, scores):
            token_logps[(i, j)] = logps

    per_item = []
    for i, item in enumerate(items):
        logprobs = [sum(token_logps[(i, j)]) for j in range(len(item.choices))]
        normed = [lp / len(choice) for lp, choice in zip(logprobs, item.choices)]
        pred, pred_norm = _argmax(logprobs), _argmax(normed)
        per_item.append(
            {
                "id": item.id,
                "topic": item.topic,
                "answer": item.answer,
                "pred": pred,
                "pred_norm": pred_norm,
                "correct": pred == item.answer,
                "correct_norm": pred_norm == item.answer,
                "logprobs": logprobs,
                "n_tokens": [len(token_logps[(i, j)]) for j in range(len(item.choices))],
            }
        )
    by_topic: dict[str, dict[str, float]] = {}
    for topic in sorted({row["topic"] for row in per_item}):
        rows_t = [row for row in per_item if row["topic"] == topic]
        by_topic[topic] = {
            "acc": sum(r["correct"] for r in rows_t) / len(rows_t),
            "acc_norm": sum(r["correct_norm"] for r in rows_t) / len(rows_t),
            "n": len(rows_t),
        }
    return {
        "model": handle.label,
        "acc": sum(r["correct"] for r in per_item) / len(per_item),
        "acc_norm": sum(r["correct_norm"] for r in per_item) / len(per_item),
        "n": len(per_item),
        "by_topic": by_topic,
        "per_item": per_item,
    }


# --------------------------------------------------------------------------- lm-evaluation-harness


def write_lm_eval_task(folder: str | Path, data_file: str | Path | None = None) -> Path:
    """Write the `rlp_workbench_mc` task YAML into `folder`, its data file given as an absolute path.

    lm-eval hands `data_files` to `datasets.load_dataset("json", ...)`, which resolves a relative path
    against the working directory, not the YAML's folder; so the YAML is written at run time. The template
    is data/mc/rlp_workbench_mc.yaml (usable as is from the repository root with `lm_eval --include_path data/mc`).
    """
    import yaml

    data_file = Path(data_file if data_file is not None else mc_task_path()).expanduser().resolve()
    if not data_file.is_file():
        raise WorkbenchError(f"no such multiple-choice task file: {data_file}")
    template = data_dir() / "mc" / LM_EVAL_YAML
    try:
        config = yaml.safe_load(template.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkbenchError(f"the lm-eval task template {template} is missing ({exc.strerror})") from exc
    config["dataset_kwargs"] = {"data_files": {"test": str(data_file)}}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / LM_EVAL_YAML
    target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return target


def _looks_like_path(spec: str) -> bool:
    """lm-eval also takes a task YAML's path or a glob pattern where a task name goes."""
    return any(ch in spec for ch in "/*?") or spec.endswith((".yaml", ".yml"))


def lm_eval_run(
    handle: ModelHandle,
    tasks: list[str],
    limit: int | float | None = None,
    include_local: bool = True,
    batch_size: int = 16,
    num_fewshot: int | None = None,
    log_samples: bool = False,
) -> dict:
    """Run lm-evaluation-harness on `handle` (no copy of the model) and return its results dictionary.

    `tasks` may name `rlp_workbench_mc` (our task, registered when `include_local`) and any lm-eval task
    such as "arc_easy" (those fetch their data from the Hugging Face hub). The log-softmax runs in float32.
    `results["results"][task]` holds "acc,none" and "acc_norm,none"; `log_samples` adds `results["samples"]`
    (per document, `resps`: each choice's [log-prob, is-greedy]).
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise WorkbenchError(
            "lm_eval_run needs lm-evaluation-harness: pip install lm-eval (into the workbench's .venv)"
        ) from exc
    if not tasks:
        raise WorkbenchError("lm_eval_run needs at least one task name, e.g. ['rlp_workbench_mc']")
    if LM_EVAL_TASK in tasks and not include_local:
        raise WorkbenchError(f"task {LM_EVAL_TASK!r} is only registered with include_local=True")
    with tempfile.TemporaryDirectory(prefix="workbench-lm-eval-") as folder:
        if include_local:
            write_lm_eval_task(folder)
        # indexing lm-eval's ~15k built-in task YAMLs takes seconds: skip it when only our task is asked for
        task_manager = TaskManager(
            include_path=folder if include_local else None,
            include_defaults=any(t != LM_EVAL_TASK for t in tasks),
        )
        unknown = [t for t in tasks if t not in task_manager.all_tasks and not _looks_like_path(t)]
        if unknown:
            raise WorkbenchError(
                f"lm-eval knows no task {', '.join(map(repr, unknown))}; "
                f"try {LM_EVAL_TASK!r} or an lm-eval task name such as 'arc_easy'"
            )
        lm = HFLM(
            pretrained=handle.model,
            tokenizer=handle.tokenizer,
            batch_size=batch_size,
            device=str(handle.device),
            softmax_dtype=torch.float32,
        )
        try:
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(tasks),
                num_fewshot=num_fewshot,
                limit=limit,
                task_manager=task_manager,
                log_samples=log_samples,
                bootstrap_iters=0,
            )
        except ConnectionError as exc:  # what datasets raises for an unreachable hub or HF_*_OFFLINE=1
            raise WorkbenchError(
                f"lm-eval could not fetch a task's data from the Hugging Face hub ({str(exc).splitlines()[0]}); "
                f"hub tasks need network access, {LM_EVAL_TASK!r} runs offline"
            ) from exc
    if results is None:
        raise WorkbenchError("lm-eval returned no results")
    return results
