"""Does a model read its thoughts, and are its own thoughts right? Measured at the answers of held-out worksheets.

For each model: the probe families at every marked answer (`thinking_ready.answer_probes`: empty, leak, neutral and
the corpus's own scratchpad and restatement), the share of answers where each family is best, the held-out loss on the
ordinary corpus without thoughts, and the model's own sampled thoughts by problem family and style (is the answer its
most likely next token after the thought? reward, content gain).

    .venv/bin/python benchmarks/thinking_probes.py gemma3-270m warm:gemma3-270m runs/rlp-warm-<time> --docs 12

Prints tables and writes benchmarks/results/thinking_probes.json (with the CPU kind and dtype).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from workbench.data import load_documents_spec
from workbench.evaluation import EvalSettings, evaluate, evaluation_documents
from workbench.hardware import cpu_kind
from workbench.models import load_model
from workbench.thinking_ready import answer_probes, best_family_shares, own_thoughts, style_margin
from workbench.training.warm_start import resolve_model_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model names, run directories or warm:BASE")
    parser.add_argument(
        "--data", default="thinking:eval", help="held-out worksheets (e.g. thinking:eval?families=lookup)"
    )
    parser.add_argument("--docs", type=int, default=12, help="how many of them, in order")
    parser.add_argument("-G", type=int, default=4, help="sampled thoughts per answer")
    parser.add_argument("--thought-tokens", type=int, default=48)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "thinking_probes.json"))
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    docs = load_documents_spec(args.data)[: args.docs]
    results = {"cpu": cpu_kind(), "data": args.data, "docs": args.docs, "models": {}}
    for name in args.models:
        start = time.perf_counter()
        policy = load_model(resolve_model_name(name))
        # slip: the corpus's scratchpad with one mistake - what a wrong scratchpad costs at the answer
        probes, maps = answer_probes(policy, docs, corpus_styles=("scratch", "restate", "slip"))
        best = best_family_shares(maps)
        ordinary = EvalSettings(data="corpus:eval", docs=0, positions="every:48", G=0)
        plain = evaluate(policy, evaluation_documents(policy.tokenizer, ordinary), ordinary)
        own = own_thoughts(policy, docs, args.G, args.thought_tokens)
        margin = style_margin(own)
        print(f"===== {name} ({policy.dtype_choice.describe()}) {time.perf_counter() - start:.0f} s")
        print(probes.round(3).to_string())
        print("best family:", best.round(3).to_dict())
        print(f"ordinary held-out loss {plain['eval_loss']:.3f} nats/token")
        print(own.groupby("family")[["right", "reward", "content_gain"]].mean().round(2).to_string())
        print(own.groupby("style")[["right", "reward", "content_gain"]].agg(["mean", "size"]).round(2).to_string())
        by_outcome = own.groupby(["style", "right"])[["reward", "content_gain"]].agg(["mean", "size"])
        print(by_outcome.round(2).to_string())
        print(f"E[r | scratch] - E[r | restate] = {margin['margin']:+.2f} ± {margin['se']:.2f} nats (2 SE needed)")
        results["models"][name] = {
            "dtype": str(policy.dtype),
            "probes": probes.to_dict(),
            "best_family": best.to_dict(),
            "ordinary_loss": plain["eval_loss"],
            "own_by_family": own.groupby("family")[["right", "reward", "content_gain"]].mean().to_dict(),
            "own_by_style": own.groupby("style")[["right", "reward", "content_gain"]].mean().to_dict(),
            "own_share_scratch": float((own["style"] == "scratch").mean()),
            "style_margin": margin,
            "own_by_style_and_outcome": {
                f"{style}/{'right' if right else 'wrong'}": {
                    "reward": float(g["reward"].mean()),
                    "content_gain": float(g["content_gain"].mean()),
                    "n": int(len(g)),
                }
                for (style, right), g in own.groupby(["style", "right"])
            },
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=float))
    print(args.out)


if __name__ == "__main__":
    main()
