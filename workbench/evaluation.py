"""One held-out evaluation for every model the workbench compares: base, RLP-trained, NTP-trained, any design.

A comparison is only fair when every model is measured the same way (shared/reference/rewards.md, "Readings that
are easy to get wrong"): the same documents, positions, thought budget, temperature, guards and seeds. So the
settings are one frozen record, `EvalSettings`, built from the fields every training config shares
(`eval_settings(config)`: no trainer-specific field can reach it), written into every run directory
(`run.json: evaluation`) and checked before two runs are compared (`require_same_settings`).

Metrics (one spelling, used by trainers, notebooks and reports):

    eval_loss                   mean NLL per token without a thought (nats)
    eval_perplexity             exp(eval_loss)
    eval_accuracy               share of tokens the model ranks first without a thought
    eval_reward_mean            log p(x_t | x_<t, c) - log p(x_t | x_<t): the information gain of the model's own
                                sampled thoughts over its *own* no-think prediction (each model is its own teacher,
                                so base, RLP and NTP are measured alike; RLP's EMA teacher is a training device)
    eval_logp_with_thought      log p(x_t | x_<t, c), comparable across models as it is
    eval_content_gain_mean      log p(x_t | x_<t, c) - log p(x_t | x_<t, <think></think>): what the words added
    eval_empty_thought_reward   the empty thought's reward: the format cost of the markers
    eval_share_positive         share of sampled thoughts with a positive reward
    eval_thought_tokens_mean, eval_share_empty, eval_share_closed_by_marker: how the model thinks

At `marked` positions (answer tokens of the thinking corpus, `data/thinking`) also the end task:

    eval_answer_accuracy_thinking   share of sampled thoughts after which the model's most likely token is the answer
    eval_answer_accuracy_no_think   share of answers the model ranks first without a thought (the opening marker's
                                    first token excluded: asked not to think, what would it answer?)
    eval_share_scratch              share of sampled thoughts in the scratchpad style (at least one counted step;
                                    `thinking_corpus.thought_style`: scratch, restate or guess)
    eval_n_<style>, eval_reward_<style>_mean, eval_share_<style>_at_budget
                                    per style: how many thoughts, their mean reward, the share cut off by the budget

Each mean comes with its standard error, `<metric>_se` (`clustered_se`): the G thoughts at one position, and the
tokens of one document, are not independent draws, so the SE is the spread of the per-position (per-document for
eval_loss) means over the square root of their number. NaN where there are fewer than two positions or documents.
`evaluate(..., records=[])` also returns one record per scored position (`position_records`), which a run writes to
`eval/step-NNNNNN.jsonl`: `workbench.run_compare.compare_runs` pairs two runs' records on the same answers.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.engine.scorer import no_think_scores
from workbench.engine.thought import SamplingConfig, ThoughtTemplate
from workbench.errors import WorkbenchError
from workbench.models import ModelHandle


@dataclass(frozen=True)
class EvalSettings:
    """Everything that decides an evaluation's numbers, apart from the model."""

    data: str = "corpus:eval"  # held-out documents
    docs: int = 4  # the first N of them (0 = all)
    max_doc_tokens: int = 512  # documents cut to this many tokens
    positions: str = "every:48"  # where thoughts are sampled
    G: int = 2  # thoughts per position (0: no thoughts, the no-think metrics only)
    thought_tokens: int = 32
    temperature: float = 0.7
    top_p: float = 1.0
    min_thought_tokens: int = 1  # the paper's action space: a thought has at least one token
    allow_eos: bool = True
    seed: int = 0  # of the positions and thoughts; independent of any training seed
    think_open: str = "<think>"
    think_close: str = "</think>"

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            G=max(1, self.G),
            thought_tokens=self.thought_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            allow_eos=self.allow_eos,
            min_thought_tokens=min(self.min_thought_tokens, self.thought_tokens),
        )

    def template(self) -> ThoughtTemplate:
        return ThoughtTemplate(self.think_open, self.think_close)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def eval_settings(config) -> EvalSettings:
    """The evaluation of a training config: read from the `eval_*` fields every config shares, and nothing else."""
    return EvalSettings(
        data=config.eval_data,
        docs=config.eval_docs,
        max_doc_tokens=config.max_doc_tokens,
        positions=config.eval_positions,
        G=config.eval_G,
        thought_tokens=config.eval_thought_tokens,
        temperature=config.eval_temperature,
        top_p=config.eval_top_p,
        min_thought_tokens=config.eval_min_thought_tokens,
        allow_eos=config.eval_allow_eos,
        seed=config.eval_seed,
        think_open=config.think_open,
        think_close=config.think_close,
    )


def require_same_settings(settings: dict[str, EvalSettings | dict[str, Any]]) -> EvalSettings:
    """Refuse to compare evaluations made under different settings (one line naming the fields that differ)."""
    items = {k: v if isinstance(v, EvalSettings) else EvalSettings(**v) for k, v in settings.items()}
    names = list(items)
    first = items[names[0]]
    for name in names[1:]:
        other = items[name]
        if other != first:
            diff = [
                f.name for f in dataclasses.fields(EvalSettings) if getattr(other, f.name) != getattr(first, f.name)
            ]
            raise WorkbenchError(
                f"{names[0]} and {name} were evaluated under different settings ({', '.join(diff)}); "
                "re-evaluate both with one EvalSettings (workbench.evaluation.evaluate)"
            )
    return first


def settings_of_run(run_dir) -> EvalSettings:
    """The evaluation settings a training run recorded (run.json), or those its config implies for older runs."""
    import json
    from pathlib import Path

    run_json = Path(run_dir) / "run.json"
    if run_json.exists() and "evaluation" in (record := json.loads(run_json.read_text())):
        return EvalSettings(**record["evaluation"])
    from workbench.training.configs import load_config

    return eval_settings(load_config(Path(run_dir) / "config.yaml"))


def clustered_se(values, clusters) -> float:
    """Standard error of the mean of `values` whose members of one cluster (the thoughts at one position, the tokens of
    one document) are not independent: std of the cluster means (ddof 1) / sqrt(number of clusters). NaN values are
    left out; fewer than two clusters give NaN."""
    v = np.asarray(values, dtype=float)
    c = np.asarray(clusters)
    keep = ~np.isnan(v)
    v, c = v[keep], c[keep]
    if v.size == 0:
        return float("nan")
    _, inverse = np.unique(c, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = int(inverse.max()) + 1
    if n < 2:
        return float("nan")
    means = np.bincount(inverse, weights=v, minlength=n) / np.bincount(inverse, minlength=n)
    return float(means.std(ddof=1) / np.sqrt(n))


def no_think_answer(rm, t: int, open_first: int) -> int:
    """The model's answer at position t without a thought: its most likely token, the opening marker's first token set
    aside (asked not to think, what would it answer?)."""
    first, second = rm.no_think.top_ids[t][:2]
    return int(second if first == open_first else first)


def answer_after(thought) -> int:
    """The model's answer after a thought: its most likely next token there (`Thought.next_top`, which the sampler
    records when asked for top_k >= 1). "Right after thinking" everywhere means this equals the target."""
    return int(thought.next_top[0][0])


def position_records(
    rm, doc: int, answers: bool, open_first: int, families: dict[int, str] | None = None
) -> list[dict[str, Any]]:
    """One record per position of a document's reward map: what a paired comparison of two models needs. `doc` is the
    document's index in the evaluation, so two runs under the same settings name the same answer the same way;
    `families` names each answer's problem family (`DocumentIds.families`)."""
    from workbench.thinking_corpus import thought_style

    rewards = rm.rewards
    at: dict[int, list[int]] = {}  # position -> indices of its thoughts
    for i, th in enumerate(rm.thoughts):
        at.setdefault(th.position, []).append(i)
    nan = float("nan")
    out = []
    for t in rm.positions:
        idx = at.get(t, [])
        target = rm.document_ids[t]
        record = {
            "doc": doc,
            "position": int(t),
            "target": int(target),
            "family": (families or {}).get(int(t), ""),  # the answer's problem family, where the corpus names it
            # each thought's style and how it ended: the table `run_compare.endings_table` reads
            "styles": [thought_style(rm.thoughts[i].text) for i in idx],
            "closed_by": [rm.thoughts[i].closed_by for i in idx],
            "reward_mean": float(rewards[idx].mean()) if idx else nan,
            "logp_with_thought": float(np.mean([rm.thoughts[i].logp_with_thought for i in idx])) if idx else nan,
        }
        if answers:
            record["no_think_right"] = float(no_think_answer(rm, t, open_first) == target)
            right = [float(answer_after(rm.thoughts[i]) == target) for i in idx]
            record["thinking_right"] = float(np.mean(right)) if idx else nan
            record["right"] = right  # per thought, in the order of `styles`
        out.append(record)
    return out


def evaluate(
    policy: ModelHandle,
    documents: list[list[int]],
    settings: EvalSettings,
    progress: bool = False,
    maps: list | None = None,
    records: list | None = None,
) -> dict[str, float]:
    """The held-out metrics of `policy` on tokenised `documents` (already cut to settings.max_doc_tokens), each mean
    with its standard error (`<metric>_se`). `maps`: a list that receives each document's RewardMap (with thoughts),
    e.g. for the reward-map film; `records`: a list that receives one record per scored position (paired comparisons)."""
    from workbench.data import parse_positions
    from workbench.metrics import reward_stats, thoughts_stats
    from workbench.rewards import reward_map, run_teacher_pass
    from workbench.thinking_corpus import style_stats

    if not documents:
        raise WorkbenchError("evaluate: no held-out documents")
    start = time.perf_counter()
    answers = parse_positions(settings.positions).kind == "marked"
    open_first = settings.template().open_ids(policy.tokenizer)[0]
    nll, correct, count = 0.0, 0, 0
    rewards, with_thought, content, empty, thoughts = [], [], [], [], []
    right_thinking, right_no_think = [], []
    doc_nll: list[float] = []  # mean NLL per token of each document (eval_loss_se)
    at: list[tuple[int, int]] = []  # (document, position) of each thought: its cluster
    answer_at: list[tuple[int, int]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(documents), desc=f"evaluating {policy.label}", leave=False)
    for d, ids in enumerate(documents):
        if settings.G == 0:
            scores, _ = no_think_scores(policy, ids, entropy=False)  # entropies are not needed here: quicker
            own = scores.logp
        else:
            done = run_teacher_pass(policy, ids, top_k=2) if answers else None
            rm = reward_map(
                policy,
                policy,
                ids,
                settings.positions,
                settings.sampling(),
                settings.template(),
                teacher_pass=done,
                top_k=1 if answers else 0,
            )
            own = rm.no_think.logp
            if maps is not None:
                maps.append(rm)
            if answers:
                right_thinking.extend(answer_after(th) == ids[th.position] for th in rm.thoughts)
                for t in rm.positions:
                    right_no_think.append(no_think_answer(rm, t, open_first) == ids[t])
                    answer_at.append((d, t))
            if records is not None:
                records.extend(position_records(rm, d, answers, open_first, getattr(ids, "families", None)))
            at.extend((d, th.position) for th in rm.thoughts)
            rewards.extend(rm.rewards.tolist())
            with_thought.extend(th.logp_with_thought for th in rm.thoughts)
            content.extend(rm.content_gains.tolist())
            empty.extend(rm.empty_rewards.values())
            thoughts.extend(rm.thoughts)
            scores = rm.no_think
        nll -= float(np.nansum(own[1:]))
        doc_nll.append(-float(np.nanmean(own[1:])))
        correct += int((scores.top_id[1:] == np.asarray(ids[1:])).sum())
        count += len(ids) - 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    out = {
        "eval_loss": nll / count,
        "eval_loss_se": clustered_se(doc_nll, range(len(doc_nll))),
        "eval_perplexity": float(np.exp(nll / count)),
        "eval_accuracy": correct / count,
    }
    if thoughts:
        stats = {**reward_stats(rewards), **thoughts_stats(thoughts)}
        out.update(
            {
                "eval_reward_mean": stats["reward_mean"],
                "eval_logp_with_thought": float(np.mean(with_thought)),
                "eval_content_gain_mean": float(np.mean(content)),
                "eval_empty_thought_reward": float(np.mean(empty)),
                "eval_share_positive": stats["share_positive"],
                "eval_thought_tokens_mean": stats["thought_tokens_mean"],
                "eval_share_empty": stats["share_empty"],
                "eval_share_closed_by_marker": stats["share_closed_by_marker"],
                "eval_reward_mean_se": clustered_se(rewards, at),
                "eval_logp_with_thought_se": clustered_se(with_thought, at),
                "eval_content_gain_mean_se": clustered_se(content, at),
            }
        )
    if right_thinking:
        styles = style_stats([th.text for th in thoughts], rewards, [th.closed_by for th in thoughts], prefix="eval_")
        out.update(
            {
                "eval_answer_accuracy_thinking": float(np.mean(right_thinking)),
                "eval_answer_accuracy_no_think": float(np.mean(right_no_think)),
                "eval_share_scratch": styles["eval_n_scratch"] / len(thoughts),
                **styles,
                "eval_answer_accuracy_thinking_se": clustered_se(np.asarray(right_thinking, dtype=float), at),
                "eval_answer_accuracy_no_think_se": clustered_se(np.asarray(right_no_think, dtype=float), answer_at),
                "eval_answers": len(right_no_think),
            }
        )
    out["time_eval_s"] = time.perf_counter() - start
    return out


def evaluation_documents(tokenizer, settings: EvalSettings) -> list[list[int]]:
    """The held-out documents of `settings`, tokenised and cut as every trainer and notebook cuts them."""
    from workbench.data import load_documents_spec, tokenize_documents

    docs = load_documents_spec(settings.data)
    return tokenize_documents(tokenizer, docs[: settings.docs] if settings.docs else docs, settings.max_doc_tokens)


def film_frame(rm, step: int) -> dict[str, Any]:
    """One frame of a run's reward-map film: a held-out document's tokens and, at each scored position, the mean
    reward and content gain of the sampled thoughts at this step (and the best thought), as plain JSON."""
    per = rm.per_position()
    return {
        "step": int(step),
        "model": rm.model,
        "tokens": list(rm.tokens),
        "positions": [
            {
                "position": int(r.position),
                "reward_mean": float(r.reward_mean),
                "content_gain_mean": None if np.isnan(r.content_gain_mean) else float(r.content_gain_mean),
                "best_thought": str(r.best_thought),
            }
            for r in per.itertuples()
        ],
    }


def read_film(run_dir) -> list[dict[str, Any]]:
    """The frames a run wrote (film/step-NNNNNN.json), in step order."""
    import json
    from pathlib import Path

    from workbench.metrics import renamed

    folder = Path(run_dir) / "film"
    frames = [json.loads(p.read_text()) for p in sorted(folder.glob("step-*.json"))] if folder.is_dir() else []
    for frame in frames:  # a film written under the old metric names reads the same
        frame["positions"] = [renamed(p) for p in frame["positions"]]
    return frames


def recorded_evaluation(run_dir, step: int) -> dict[str, Any] | None:
    """The run's own evaluation at `step` (its metrics.jsonl row with eval_* metrics), measured by the trainer under
    `settings_of_run(run_dir)` - the numbers `evaluate` gives the checkpoint of that step, already paid for. None when
    the run did not evaluate at that step (e.g. eval_at_start: false for step 0)."""
    from pathlib import Path

    from workbench.metrics import renamed
    from workbench.run_dirs import read_jsonl_rows

    rows = [renamed(r) for r in read_jsonl_rows(Path(run_dir) / "metrics.jsonl")]
    found = [r for r in rows if r.get("step") == step and "eval_loss" in r]
    return {k: v for k, v in found[-1].items() if k.startswith("eval_")} if found else None
