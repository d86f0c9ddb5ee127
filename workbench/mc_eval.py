"""A small offline multiple-choice evaluation, scored by lm-evaluation-harness itself.

The task (data/mc/science_math_mc.jsonl, or any .jsonl file in its format) is registered with lm-eval as the local
task `rlp_workbench_mc` (data/mc/rlp_workbench_mc.yaml, no hub): each choice is scored by the summed log-probability
of the continuation " " + choice after the prompt "Question: {question}\nAnswer:"; `acc` picks the choice with the
highest summed log-prob, `acc_norm` divides it by the choice's length in characters first. lm-eval is the one
scorer: `mc_scores(handle)` runs it and turns its output into {"acc", "acc_norm", "n", "by_topic", "per_item"};
`lm_eval_run(handle, tasks)` is the plain run, for our task and any hub task (e.g. arc_easy) by name.
lm-eval is an optional dependency (the `eval` extra: pip install lm-eval); `lm_eval_missing()` says how to install
it where it is absent. `load_mc_task` reads and checks a task file, with errors that name the bad line.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.data import _read_text, data_dir, jsonl_objects
from workbench.errors import WorkbenchError
from workbench.models import ModelHandle

MC_TASK_FILE = "science_math_mc.jsonl"
LM_EVAL_TASK = "rlp_workbench_mc"
LM_EVAL_YAML = "rlp_workbench_mc.yaml"
PROMPT = "Question: {question}\nAnswer:"
TARGET_DELIMITER = " "
INSTALL_HINT = "pip install lm-eval (or bash scripts/install.sh, which installs the workbench's `eval` extra)"


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
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
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


def lm_eval_missing() -> str | None:
    """None where lm-evaluation-harness imports; else one line saying how to install it."""
    try:
        import lm_eval  # noqa: F401
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError as exc:
        reason = (str(exc) or type(exc).__name__).splitlines()[0]
        return f"lm-evaluation-harness is not installed ({reason}): {INSTALL_HINT}"
    return None


def _head_at_continuations(hflm: type) -> type:
    """lm-eval's HFLM with one change of arithmetic, none of results: the LM head runs only at the positions whose
    log-probs a request needs (its continuation's), not at every position of every padded row.

    HFLM computes [batch, length, vocab] logits and a float32 log-softmax over all of them, then keeps the
    continuation's few rows; on Gemma 3's 262k-row head that is ~3/4 of a multiple-choice run on a CPU. Here the
    decoder runs on right-padded rows (causal, no mask: padding after a row cannot change it), one row per distinct
    input (the one-token choices of a question share theirs, as in HFLM), the hidden states of the continuation
    positions are gathered, and the head and the float32 log-softmax run once per distinct position.
    Tokenisation, truncation from the left, the greedy check and the (log-prob, is-greedy) answers are HFLM's;
    tests/test_mc_eval.py checks the log-probs against HFLM's own on the same model.
    """
    from workbench.engine.token_sampling import LMHead

    class HeadAtContinuationsLM(hflm):  # type: ignore[misc, valid-type]
        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
            if self.backend != "causal":
                return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
            from tqdm.auto import tqdm

            decoder, head = self.model.get_decoder(), LMHead.of(self.model)
            batch_size = self.batch_size if isinstance(self.batch_size, int) else (override_bs or 16)
            # the decoder's input of a request: context + continuation without its last token (a target only), cut
            # from the left as HFLM cuts it. Requests with the same input (the choices of a question that are one
            # token long) share one row, as HFLM's grouping of one-token continuations does.
            inputs: dict[tuple[int, ...], int] = {}
            where, spans = [], []
            for _, context, continuation in requests:
                if not context or not continuation:
                    raise WorkbenchError("lm-eval request with an empty context or continuation")
                inp = tuple((context + continuation)[-(self.max_length + 1) :][:-1])
                where.append(inputs.setdefault(inp, len(inputs)))
                spans.append((len(inp) - len(continuation), len(inp)))
            unique = list(inputs)
            order = sorted(range(len(unique)), key=lambda u: -len(unique[u]))
            answers: list[tuple[float, bool] | None] = [None] * len(requests)
            users: dict[int, list[int]] = {}
            for i, u in enumerate(where):
                users.setdefault(u, []).append(i)
            for start in tqdm(
                range(0, len(order), batch_size),
                disable=disable_tqdm or self.rank != 0,
                desc="Running loglikelihood requests (head at continuations)",
            ):
                chunk = order[start : start + batch_size]
                batch = torch.zeros(
                    len(chunk), max(len(unique[u]) for u in chunk), dtype=torch.long, device=self.device
                )
                for r, u in enumerate(chunk):
                    batch[r, : len(unique[u])] = torch.tensor(unique[u], dtype=torch.long)
                served = [(r, i) for r, u in enumerate(chunk) for i in users[u]]
                at: dict[tuple[int, int], int] = {}  # (row, position) -> its head row: shared positions run once
                for r, i in served:
                    for t in range(*spans[i]):
                        at.setdefault((r, t), len(at))
                rows_t = torch.tensor([r for r, _ in at], dtype=torch.long, device=self.device)
                cols_t = torch.tensor([t for _, t in at], dtype=torch.long, device=self.device)
                with torch.inference_mode():
                    hidden = decoder(input_ids=batch, use_cache=False).last_hidden_state
                    logp = torch.log_softmax(head.logits(hidden[rows_t, cols_t]), dim=-1, dtype=self.softmax_dtype)
                for r, i in served:
                    a, b = spans[i]
                    request_str, _, continuation = requests[i]
                    cont = torch.tensor(continuation[-(b - a) :], dtype=torch.long, device=self.device)
                    rows_logp = logp[[at[(r, t)] for t in range(a, b)]]
                    answer = (
                        float(rows_logp.gather(1, cont[:, None]).sum()),
                        bool((rows_logp.argmax(-1) == cont).all()),
                    )
                    answers[i] = answer
                    if request_str is not None:
                        self.cache_hook.add_partial("loglikelihood", request_str, answer)
            return answers

    return HeadAtContinuationsLM


def lm_eval_run(
    handle: ModelHandle,
    tasks: list[str],
    limit: int | float | None = None,
    include_local: bool = True,
    batch_size: int = 16,
    num_fewshot: int | None = None,
    log_samples: bool = False,
    task_file: str | Path | None = None,
) -> dict:
    """Run lm-evaluation-harness on `handle` (no copy of the model) and return its results dictionary.

    `tasks` may name `rlp_workbench_mc` (our task, registered when `include_local`; its data is `task_file`, by
    default the shipped `mc_task_path()`) and any lm-eval task such as "arc_easy" (those fetch their data from the
    Hugging Face hub). The log-softmax runs in float32; the process's random seeds are left alone.
    `results["results"][task]` holds "acc,none" and "acc_norm,none"; `log_samples` adds `results["samples"]`
    (per document, `resps`: each choice's [[log-prob, is-greedy]]); `mc_summary` turns it into a plain dict.
    """
    missing = lm_eval_missing()
    if missing:
        raise WorkbenchError(f"lm_eval_run needs {missing}")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise WorkbenchError("lm_eval_run needs at least one task name, e.g. ['rlp_workbench_mc']")
    if LM_EVAL_TASK in tasks and not include_local:
        raise WorkbenchError(f"task {LM_EVAL_TASK!r} is only registered with include_local=True")
    with tempfile.TemporaryDirectory(prefix="workbench-lm-eval-") as folder:
        if include_local:
            write_lm_eval_task(folder, task_file)
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
        lm = _head_at_continuations(HFLM)(
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
                random_seed=None,  # lm-eval would otherwise reseed python, numpy and torch for the whole process
                numpy_random_seed=None,
                torch_random_seed=None,
            )
        except ConnectionError as exc:  # what datasets raises for an unreachable hub or HF_*_OFFLINE=1
            raise WorkbenchError(
                f"lm-eval could not fetch a task's data from the Hugging Face hub ({str(exc).splitlines()[0]}); "
                f"hub tasks need network access, {LM_EVAL_TASK!r} runs offline"
            ) from exc
    if results is None:
        raise WorkbenchError("lm-eval returned no results")
    return results


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # the first maximum, as lm-eval's np.argmax


def mc_summary(results: dict, items: list[MCItem], label: str = "") -> dict:
    """lm-eval's output for `rlp_workbench_mc` (run with log_samples=True) as a plain dict.

    {"model", "acc", "acc_norm", "n", "by_topic", "per_item"}: `acc` and `acc_norm` are lm-eval's own; each
    per-item row has the item's id and topic, the choices' summed log-probs as lm-eval computed them (`logprobs`),
    `pred` and `pred_norm` (the argmax of the log-probs, and of the log-probs over the choices' lengths), and
    whether each is right (lm-eval's per-sample acc and acc_norm). `items` are the task's items in file order
    (`load_mc_task`), matched to lm-eval's documents by index.
    """
    try:
        metrics = results["results"][LM_EVAL_TASK]
        samples = sorted(results["samples"][LM_EVAL_TASK], key=lambda s: s["doc_id"])
    except KeyError as exc:
        raise WorkbenchError(
            f"lm-eval's results hold no {exc} for {LM_EVAL_TASK!r}: run lm_eval_run(..., log_samples=True)"
        ) from exc
    per_item = []
    for sample in samples:
        item = items[sample["doc_id"]] if sample["doc_id"] < len(items) else None
        if item is None or item.question != sample["doc"]["question"]:
            raise WorkbenchError(f"lm-eval's document {sample['doc_id']} is not the task file's item at that index")
        logprobs = [float(resp[0][0]) for resp in sample["resps"]]
        normed = [lp / len(choice) for lp, choice in zip(logprobs, item.choices)]
        per_item.append(
            {
                "id": item.id,
                "topic": item.topic,
                "answer": item.answer,
                "pred": _argmax(logprobs),
                "pred_norm": _argmax(normed),
                "correct": bool(sample["acc"]),
                "correct_norm": bool(sample["acc_norm"]),
                "logprobs": logprobs,
            }
        )
    by_topic: dict[str, dict[str, float]] = {}
    for topic in sorted({row["topic"] for row in per_item}):
        rows = [row for row in per_item if row["topic"] == topic]
        by_topic[topic] = {
            "acc": sum(r["correct"] for r in rows) / len(rows),
            "acc_norm": sum(r["correct_norm"] for r in rows) / len(rows),
            "n": len(rows),
        }
    return {
        "model": label,
        "acc": float(metrics["acc,none"]),
        "acc_norm": float(metrics["acc_norm,none"]),
        "n": len(per_item),
        "by_topic": by_topic,
        "per_item": per_item,
    }


def mc_scores(
    handle: ModelHandle, task_file: str | Path | None = None, limit: int | None = None, batch_size: int = 16
) -> dict:
    """`handle` on the multiple-choice task through lm-evaluation-harness (zero-shot, offline): `mc_summary`'s dict.

    `task_file` (default: the shipped 40 items) is checked by `load_mc_task` first, so a bad line is named
    before lm-eval runs; `limit` scores only the first items. Needs lm-eval (`lm_eval_missing()` says how).
    """
    items = load_mc_task(task_file)
    results = lm_eval_run(
        handle, [LM_EVAL_TASK], limit=limit, batch_size=batch_size, log_samples=True, task_file=task_file
    )
    return mc_summary(results, items, label=handle.label)
