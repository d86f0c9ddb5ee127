"""The thought lab's numbers: probe families, content gain, design sanity and editor latency, per bundled model.

    .venv/bin/python benchmarks/thought_lab.py [--models gemma3-270m,smollm2-135m] [--docs corpus:eval#math-11,corpus:eval#prose-11]
        [--positions every:8] [--sanity-positions every:32] [--max-tokens 400] [--json OUT]

For each model (dtype "auto") and held-out document: the teacher's one pass; a sampled reward map (G=4, 32 tokens,
the notebooks' defaults) at `--positions`; the five probe families at the same positions; per family the mean reward,
share positive and mean content gain (reward - empty-thought reward); the sampled thoughts' content gain; the headroom
(best probe - best sampled). On the first document, the design sanity table for every registered design at
`--sanity-positions`. Editor latency: `ThoughtLab.score` of a typed thought at 10 positions after the document's first
pass (median and max; the first call is reported apart). The CPU capability and kind are printed first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.compare import design_sanity  # noqa: E402
from workbench.data import find_document, tokenize  # noqa: E402
from workbench.engine.thought import SamplingConfig
from workbench.hardware import cpu_kind  # noqa: E402
from workbench.models import load_model, teacher_of  # noqa: E402
from workbench.probes import headroom, probe_map  # noqa: E402
from workbench.rewards import reward_map, run_teacher_pass  # noqa: E402
from workbench.run_dirs import machine_name, versions
from workbench.thought_lab import ThoughtLab  # noqa: E402

TYPED = "The answer comes next."


def measure(model_name: str, docs: list[str], positions: str, sanity_positions: str, max_tokens: int) -> dict:
    policy = load_model(model_name, dtype="auto")
    teacher = teacher_of(policy)
    out: dict = {"model": policy.label, "dtype": policy.dtype_choice.describe(), "documents": {}}
    for k, doc_id in enumerate(docs):
        ids = tokenize(policy.tokenizer, find_document(doc_id).text, max_tokens)
        start = time.perf_counter()
        tp = run_teacher_pass(teacher, ids, top_k=8)
        rm = reward_map(policy, teacher, ids, positions, SamplingConfig(), teacher_pass=tp)
        sample_s = time.perf_counter() - start
        start = time.perf_counter()
        probes = probe_map(policy, teacher, ids, rm.positions, teacher_pass=tp)
        probe_s = time.perf_counter() - start
        s = rm.summary()
        room = headroom(rm, probes)
        record = {
            "tokens": len(ids),
            "positions": len(rm.positions),
            "families": {f: {c: round(float(v), 4) for c, v in row.items()} for f, row in probes.summary().iterrows()},
            "sampled": {
                c: round(float(s[c]), 4)
                for c in (
                    "reward_mean",
                    "share_positive",
                    "content_gain_mean",
                    "share_content_gain_positive",
                    "empty_thought_reward",
                )
            },
            "share_positions_empty_beats_every_sampled": round(
                float((rm.per_position()["empty_thought_reward"] > rm.per_position()["reward_max"]).mean()), 4
            ),
            "median_headroom": round(float(room["headroom"].median()), 4),
            "best_family_counts": room["best_family"].value_counts().to_dict(),
            "seconds": {"teacher_pass_and_sampling": round(sample_s, 2), "probes": round(probe_s, 2)},
        }
        lab = ThoughtLab(policy, teacher, ids, teacher_pass=tp)
        chosen = rm.positions[:: max(1, len(rm.positions) // 10)][:10]
        first = lab.score(chosen[0], TYPED).seconds
        times = [lab.score(t, TYPED).seconds for t in chosen]
        record["editor_seconds"] = {
            "first": round(first, 3),
            "median": round(statistics.median(times), 3),
            "max": round(max(times), 3),
            "n": len(times),
        }
        if k == 0:
            start = time.perf_counter()
            sanity_probes = probe_map(policy, teacher, ids, sanity_positions, teacher_pass=tp)
            table, _ = design_sanity(policy, teacher, sanity_probes)
            record["sanity_positions"] = len(sanity_probes.reward_map.positions)
            record["sanity"] = {d: {c: round(float(v), 4) for c, v in row.items()} for d, row in table.iterrows()}
            record["seconds"]["sanity"] = round(time.perf_counter() - start, 2)
        out["documents"][doc_id] = record
        print(json.dumps({model_name: {doc_id: record}}, indent=1), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="gemma3-270m,smollm2-135m")
    parser.add_argument("--docs", default="corpus:eval#math-11,corpus:eval#prose-11")
    parser.add_argument("--positions", default="every:8")
    parser.add_argument("--sanity-positions", default="every:32")
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print(f"machine: {machine_name()}; CPU kind: {cpu_kind()}", flush=True)
    result = {
        "machine": machine_name(),
        "cpu_kind": cpu_kind(),
        "versions": versions(),
        "command": " ".join(sys.argv),
        "models": [
            measure(m, args.docs.split(","), args.positions, args.sanity_positions, args.max_tokens)
            for m in args.models.split(",")
        ],
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(args.json)


if __name__ == "__main__":
    main()
