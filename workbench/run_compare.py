"""How sure is a difference between two runs? Paired comparisons on the same evaluated answers, and seeds as mean ± spread.

Every run evaluates under one `EvalSettings` and writes, besides its metrics, one record per evaluated position
(`eval/step-NNNNNN.jsonl`, `evaluation.position_records`): the same answers, the same thought seeds, for every run
under those settings. Two runs compared there form pairs, so the difference of a metric has a paired standard error,
smaller than either run's own SE where both runs find the same answers easy or hard:

    d_i = a_i - b_i over the answers i both runs evaluated;  diff = mean(d);  SE = std(d, ddof 1) / sqrt(n)

and a 95 % interval diff ± 1.96 SE (normal approximation; with n < 30 answers read it as rough).

    from workbench.run_compare import compare_runs, seed_table
    compare_runs("runs/rlp-...", "runs/ntp-...")          # a DataFrame: metric, A, B, A - B, SE, 95 % CI, n
    seed_table({"RLP": [dir1, dir2, dir3], "NTP": [...]})  # last evaluation per run: mean ± std over seeds

From the command line: `workbench compare-runs RUN_A RUN_B [--step N]`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import WorkbenchError

# per-answer record fields compared by default, with what they mean
PAIRED_METRICS = {
    "thinking_right": "answer right after the model's own thought (share of G)",
    "no_think_right": "answer right without a thought",
    "reward_mean": "reward vs own no-think (nats)",
    "logp_with_thought": "log p(answer | context, thought)",
}
Z95 = 1.959964


def evaluation_steps(run_dir: str | Path) -> list[int]:
    """The steps at which a run wrote per-position evaluation records."""
    folder = Path(run_dir) / "eval"
    return sorted(int(p.stem.split("-")[1]) for p in folder.glob("step-*.jsonl")) if folder.is_dir() else []


def evaluation_records(run_dir: str | Path, step: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    """(step, records) of a run's evaluation at `step`, or at its last evaluated step; one line if there is none."""
    steps = evaluation_steps(run_dir)
    if not steps:
        raise WorkbenchError(
            f"{run_dir} holds no per-answer evaluation records (eval/step-*.jsonl): runs write them "
            "since the paired comparison exists; evaluate the run's checkpoints again to compare it"
        )
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise WorkbenchError(f"{run_dir} was not evaluated at step {step}; it was at steps {steps}")
    path = Path(run_dir) / "eval" / f"step-{step:06d}.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return step, records


def paired_difference(a: list[dict[str, Any]], b: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """Mean of `metric` in each list, their paired difference over the positions both hold, its SE, 95 % interval
    and whether it is beyond 2 SE."""
    key = lambda r: (r["doc"], r["position"])  # noqa: E731
    b_at = {key(r): r for r in b}
    pairs = [(r[metric], b_at[key(r)][metric]) for r in a if key(r) in b_at and metric in r and metric in b_at[key(r)]]
    pairs = [(x, y) for x, y in pairs if not (math.isnan(x) or math.isnan(y))]
    if not pairs:
        raise WorkbenchError(f"the two runs share no evaluated position with {metric!r}")
    x, y = np.array(pairs, dtype=float).T
    d = x - y
    n = len(d)
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {
        "a": float(x.mean()),
        "b": float(y.mean()),
        "diff": float(d.mean()),
        "se": se,
        "ci_low": float(d.mean() - Z95 * se),
        "ci_high": float(d.mean() + Z95 * se),
        "n": n,
        "beyond_2se": bool(abs(d.mean()) > 2 * se) if not math.isnan(se) else False,  # one answer: no SE, never beyond
    }


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    step_a: int | None = None,
    step_b: int | None = None,
    metrics: list[str] | None = None,
) -> pd.DataFrame:
    """Two runs on the same evaluated answers (their evaluation settings must match): per metric, each run's mean,
    A − B, its paired SE and 95 % interval, and the number of answers paired. Each run at its last evaluation unless
    a step is given."""
    from workbench.evaluation import require_same_settings, settings_of_run

    require_same_settings({str(run_a): settings_of_run(run_a), str(run_b): settings_of_run(run_b)})
    sa, ra = evaluation_records(run_a, step_a)
    sb, rb = evaluation_records(run_b, step_b)
    names = metrics or [m for m in PAIRED_METRICS if any(m in r for r in ra)]
    rows = []
    for m in names:
        p = paired_difference(ra, rb, m)
        rows.append(
            {
                "metric": m,
                f"A (step {sa})": p["a"],
                f"B (step {sb})": p["b"],
                "A - B": p["diff"],
                "SE": p["se"],
                "95% CI": f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]",
                "answers": p["n"],
                "beyond 2 SE": p["beyond_2se"],
            }
        )
    return pd.DataFrame(rows).set_index("metric")


def evaluated_thoughts(run_dir: str | Path, step: int | None = None) -> list[dict[str, Any]]:
    """One row per thought of a run's evaluation at `step` (default: its last): the answer's family, the thought's
    style, how it ended and whether the answer after it was right - `endings_table` reads them."""
    _, records = evaluation_records(run_dir, step)
    rows = []
    for r in records:
        for k, style in enumerate(r.get("styles", [])):
            row = {"family": r.get("family", ""), "style": style, "closed_by": r["closed_by"][k]}
            if "right" in r:
                row["right"] = r["right"][k]
            rows.append(row)
    return rows


def endings_table(thoughts: list[dict[str, Any]]) -> pd.DataFrame:
    """How thoughts ended, by family and style: how many, the share closed by the marker, by EOS and cut off at the
    budget, and (where the rows carry them) the share followed by the right answer and the mean reward. Rows: an
    evaluation's (`evaluated_thoughts`) or a run's rollouts (`training.tracking.read_rollouts`)."""
    frame = pd.DataFrame(thoughts)
    if frame.empty:
        return pd.DataFrame(columns=["thoughts", "by_marker", "by_eos", "at_budget"])
    if "family" not in frame:
        frame["family"] = ""
    frame["family"] = frame["family"].fillna("").replace("", "(none)")
    grouped = frame.groupby(["family", "style"])
    table = pd.DataFrame(
        {
            "thoughts": grouped.size(),
            "by_marker": grouped["closed_by"].apply(lambda c: float((c == "marker").mean())),
            "by_eos": grouped["closed_by"].apply(lambda c: float((c == "eos").mean())),
            "at_budget": grouped["closed_by"].apply(lambda c: float((c == "budget").mean())),
        }
    )
    for column, name in (("right", "right"), ("reward", "reward_mean")):
        if column in frame:
            table[name] = grouped[column].mean()
    return table


def evaluations(run_dir: str | Path) -> list[dict[str, float]]:
    """The eval_* metrics of each evaluated row of a run's metrics.jsonl, in step order."""
    from workbench.metrics import renamed
    from workbench.run_dirs import read_jsonl_rows

    rows = [renamed(r) for r in read_jsonl_rows(Path(run_dir) / "metrics.jsonl") if "eval_loss" in r]
    if not rows:
        raise WorkbenchError(f"{run_dir} has no evaluation in its metrics.jsonl")
    return [{k: v for k, v in row.items() if k.startswith("eval_") and isinstance(v, (int, float))} for row in rows]


def last_evaluation(run_dir: str | Path) -> dict[str, float]:
    """The eval_* metrics of a run's last evaluated row (metrics.jsonl)."""
    return evaluations(run_dir)[-1]


def seed_table(groups: dict[str, list[str | Path]], metrics: list[str] | None = None) -> pd.DataFrame:
    """Runs that differ only in seed, per label: each metric's mean over seeds ± its standard deviation (the spread
    between seeds), with the number of seeds. The last evaluation of each run."""
    metrics = metrics or [
        "eval_answer_accuracy_thinking",
        "eval_answer_accuracy_no_think",
        "eval_reward_mean",
        "eval_share_scratch",
        "eval_loss",
    ]
    rows = {}
    for label, runs in groups.items():
        evals = [last_evaluation(r) for r in runs]
        row: dict[str, Any] = {"seeds": len(evals)}
        for m in metrics:
            values = np.array([e[m] for e in evals if m in e], dtype=float)
            if values.size:
                row[m] = float(values.mean())
                row[f"{m}_spread"] = float(values.std(ddof=1)) if values.size > 1 else float("nan")
        rows[label] = row
    return pd.DataFrame(rows).T


# the arms of an experiment folder, in the order they are shown: RLP (the paper's per-thought loss averaging), RLP with
# the token-normalised loss, the null control of each, and NTP at matched FLOPs
ARMS = ("rlp", "rlptoken", "control", "controltoken", "ntp")
ARM_NAMES = {
    "rlp": "RLP",
    "rlptoken": "RLP with the token-normalised loss",
    "control": "the null control",
    "controltoken": "its null control (token-normalised)",
    "ntp": "NTP at matched FLOPs",
}
# the same arms in a figure's few characters ("tok": the token-normalised loss)
ARM_LABELS = {"rlp": "RLP", "rlptoken": "RLP tok", "control": "control", "controltoken": "control tok", "ntp": "NTP"}
# the paired comparisons experiment_markdown states, where both arms ran
PAIRS = (("rlp", "ntp"), ("rlp", "control"), ("rlptoken", "ntp"), ("rlptoken", "controltoken"))


def seed_of(run: Path) -> int:
    """SEED of a run folder named ARM-sSEED."""
    return int(run.name.rsplit("-s", 1)[1])


def arms_of(folder: str | Path, arms: tuple[str, ...] = ARMS) -> dict[str, list[Path]]:
    """The runs of an experiment folder named ARM-sSEED (benchmarks/results/*/rlp-s0, ntp-s1, ...), by arm, in seed
    order; a run without a summary.json (unfinished) and an arm without runs are left out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WorkbenchError(f"no experiment folder {folder}")
    groups = {}
    for arm in arms:
        runs = [
            p for p in folder.glob(f"{arm}-s*") if p.name[len(arm) + 2 :].isdigit() and (p / "summary.json").exists()
        ]
        if runs:
            groups[arm] = sorted(runs, key=seed_of)
    return groups


def paired_by_seed(
    groups: dict[str, list[Path]], arm_a: str, arm_b: str, metric: str = "thinking_right"
) -> pd.DataFrame:
    """For every seed both arms ran (runs named ARM-sSEED): A − B on the same evaluated answers at each run's last
    evaluation, its paired SE, and whether it is beyond 2 SE."""
    b_by_seed = {seed_of(p): p for p in groups.get(arm_b, [])}
    rows = []
    for run_a in groups.get(arm_a, []):
        run_b = b_by_seed.get(seed_of(run_a))
        if run_b is None:
            continue
        p = paired_difference(evaluation_records(run_a)[1], evaluation_records(run_b)[1], metric)
        rows.append(
            {
                "seed": seed_of(run_a),
                "A": p["a"],
                "B": p["b"],
                "A - B": p["diff"],
                "SE": p["se"],
                "answers": p["n"],
                "beyond 2 SE": p["beyond_2se"],
            }
        )
    return pd.DataFrame(rows, columns=["seed", "A", "B", "A - B", "SE", "answers", "beyond 2 SE"]).set_index("seed")


# the experiments behind the findings the notebooks and README state (commands, times and CPU in each folder's README)
MEASURED_EXPERIMENTS = {
    "shipped warm start (9 families)": "benchmarks/results/cpu-2026-12-07-rlp-control",
    "trimmed warm start (3 families)": "benchmarks/results/cpu-2026-12-07-computable",
    # configs/rlp_computable_lownoise.yaml: LR 3e-6, ~140 thoughts a step, 15 steps, evaluated at 174 answers
    "trimmed, low-noise recipe": "benchmarks/results/cpu-2026-12-07-lownoise",
}


def measured_experiments() -> dict[str, dict[str, list[Path]]]:
    """MEASURED_EXPERIMENTS read from the repository: {label: arms_of(folder)}."""
    root = Path(__file__).resolve().parents[1]
    return {label: arms_of(root / folder) for label, folder in MEASURED_EXPERIMENTS.items()}


def experiment_markdown(experiments: dict[str, dict[str, list[Path]]], metric: str = "thinking_right") -> str:
    """What each experiment measured, in sentences: every arm's answer accuracy after its own thought at the last
    evaluation (mean ± spread over seeds; and without a thought), and the paired differences of PAIRS, seed by seed,
    with their SE."""
    out = []
    for label, groups in experiments.items():
        table = seed_table(groups, ["eval_answer_accuracy_thinking", "eval_answer_accuracy_no_think"])
        _, start = evaluation_records(next(iter(groups.values()))[0], 0)
        start_right = float(np.nanmean([r[metric] for r in start]))
        arms = []
        for arm in groups:
            mean = table.loc[arm, "eval_answer_accuracy_thinking"]
            spread = table.loc[arm].get("eval_answer_accuracy_thinking_spread", float("nan"))
            seeds = int(table.loc[arm, "seeds"])
            arms.append(
                f"{ARM_NAMES.get(arm, arm)} {mean:.0%}"
                + ("" if math.isnan(spread) else f" ± {spread:.0%}")
                + f" ({seeds} seed{'s' if seeds > 1 else ''}; without a thought "
                + f"{table.loc[arm, 'eval_answer_accuracy_no_think']:.0%})"
            )
        text = (
            f"**{label}** (from {start_right:.0%} right at the start, {len(start)} answers): " + "; ".join(arms) + "."
        )
        for arm, other in PAIRS:
            paired = paired_by_seed(groups, arm, other, metric)
            if len(paired):
                each = ", ".join(f"{100 * r['A - B']:+.0f} ± {100 * r['SE']:.0f}" for _, r in paired.iterrows())
                up = int((paired["beyond 2 SE"] & (paired["A - B"] > 0)).sum())
                down = int((paired["beyond 2 SE"] & (paired["A - B"] < 0)).sum())
                text += (
                    f" {ARM_NAMES[arm]} − {ARM_NAMES[other]}, paired by seed: {each} points (beyond 2 SE: {up} above, {down} "
                    f"below, of {len(paired)} seed{'s' if len(paired) > 1 else ''})."
                )
        out.append(text)
    return "\n\n".join(out)


# the paper's thought-budget ablation (Table S.1): Qwen3-1.7B-Base after RLP, the overall benchmark average by thought
# budget in tokens; the base model before RLP averaged PAPER_BASE_AVERAGE
PAPER_BUDGET_ABLATION = {64: 11.50, 128: 9.96, 256: 14.08, 512: 24.65, 1024: 38.89, 2048: 42.17}
PAPER_BASE_AVERAGE = 34.03


def budget_of(run: str | Path) -> int:
    """The thought budget (tokens) a run trained with: its config.yaml's `thought_tokens`."""
    import yaml

    config = yaml.safe_load((Path(run) / "config.yaml").read_text()) or {}
    if "thought_tokens" not in config:
        raise WorkbenchError(f"{run}/config.yaml names no thought_tokens")
    return int(config["thought_tokens"])


def budget_runs(folder: str | Path) -> list[Path]:
    """The finished runs of a thought-budget ablation folder, named budgetB-sSEED, by budget and seed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WorkbenchError(f"no experiment folder {folder}")
    runs = [p for p in folder.glob("budget*-s*") if (p / "summary.json").exists()]
    return sorted(runs, key=lambda p: (budget_of(p), seed_of(p)))


def budget_table(runs: list[str | Path]) -> pd.DataFrame:
    """The thought-budget ablation, one row per run: its budget and seed; the answer right after the model's own
    thought on its evaluated answers before the first step (the starting model, evaluated at that budget) and after
    the last, each with its own SE; the paired change and its SE; and at the end the share of scratchpads, the share
    of them cut off by the budget and the mean thought length."""
    rows = []
    for run in map(Path, runs):
        _, start = evaluation_records(run, 0)
        step, end = evaluation_records(run)
        p = paired_difference(end, start, "thinking_right")
        evals = evaluations(run)
        first, last = evals[0], evals[-1]
        rows.append(
            {
                "budget": budget_of(run),
                "seed": seed_of(run),
                "start": p["b"],
                "end": p["a"],
                "change": p["diff"],
                "change_se": p["se"],
                "start_se": first.get("eval_answer_accuracy_thinking_se", float("nan")),
                "end_se": last.get("eval_answer_accuracy_thinking_se", float("nan")),
                "beyond 2 SE": p["beyond_2se"],
                "share_scratch": last.get("eval_share_scratch", float("nan")),
                "scratch_at_budget": last.get("eval_share_scratch_at_budget", float("nan")),
                "thought_tokens_mean": last.get("eval_thought_tokens_mean", float("nan")),
                "answers": p["n"],
                "step": step,
            }
        )
    return pd.DataFrame(rows)


def budget_markdown(table: pd.DataFrame) -> str:
    """`budget_table` in sentences, beside the paper's Table S.1: per budget, the answer right after the model's own
    thought before and after RLP, the paired change ± SE, and what the thoughts were at the end."""
    parts = []
    for budget, rows in table.groupby("budget", sort=True):
        each = "; ".join(
            f"seed {r['seed']} {r['start']:.0%} → {r['end']:.0%} ({100 * r['change']:+.0f} ± {100 * r['change_se']:.0f} points paired"
            + (", beyond 2 SE" if r["beyond 2 SE"] else "")
            + f"; scratchpads {r['share_scratch']:.0%}, {r['scratch_at_budget']:.0%} of them at the budget; "
            f"{r['thought_tokens_mean']:.0f} tokens a thought)"
            for _, r in rows.iterrows()
        )
        mean = f" — mean change {100 * rows['change'].mean():+.0f} points" if len(rows) > 1 else ""
        parts.append(f"**{budget} tokens**: {each}{mean}")
    seeds = sorted(set(table["seed"]))
    paper = ", ".join(f"{b} → {v:.2f}" for b, v in sorted(PAPER_BUDGET_ABLATION.items()))
    return (
        f"**By thought budget** (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}; "
        f"{int(table['answers'].max())} held-out answers, each evaluated at the budget it trained with): "
        + "; ".join(parts)
        + f". The paper's Table S.1 (Qwen3-1.7B-Base, overall average after RLP; the base model {PAPER_BASE_AVERAGE}): "
        + paper
        + "."
    )


# the thought-budget ablation the notebooks quote (commands, times and CPU kind in its README)
MEASURED_BUDGET_ABLATION = "benchmarks/results/cpu-2026-12-07-budget"


def measured_budget_ablation() -> pd.DataFrame:
    """MEASURED_BUDGET_ABLATION read from the repository, as `budget_table`."""
    return budget_table(budget_runs(Path(__file__).resolve().parents[1] / MEASURED_BUDGET_ABLATION))


def format_mean_spread(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """`seed_table`'s columns as "mean ± spread" strings, for reading."""
    out = pd.DataFrame(index=table.index)
    out["seeds"] = table["seeds"].astype(int)
    for col in [c for c in table.columns if c != "seeds" and not c.endswith("_spread")]:
        spread = table.get(f"{col}_spread")
        out[col] = [
            f"{m:.{digits}f} ± {s:.{digits}f}" if spread is not None and not math.isnan(s) else f"{m:.{digits}f}"
            for m, s in zip(table[col], spread if spread is not None else [math.nan] * len(table))
        ]
    return out
