"""Cost of comparing all reward designs on one document vs the most expensive design alone, in one run.

    .venv/bin/python benchmarks/compare_designs.py [--doc science-01] [--positions every:8] [-G 4] [--thought-tokens 32]

Every run samples the thoughts (same seed, so the same thoughts) and then scores them with the selected
designs; designs share the sampling pass, the teacher's no-think pass and one continuation pass.
The issue's target: all designs together cost less than 2x the most expensive single design.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.compare import compare_designs  # noqa: E402
from workbench.data import find_document, tokenize  # noqa: E402
from workbench.designs import DESIGNS  # noqa: E402
from workbench.engine.thought import SamplingConfig
from workbench.models import load_model, teacher_of  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--doc", default="science-01")
    ap.add_argument("--positions", default="every:8")
    ap.add_argument("-G", type=int, default=4)
    ap.add_argument("--thought-tokens", type=int, default=32)
    args = ap.parse_args()
    policy = load_model(args.model)
    teacher = teacher_of(policy)
    ids = tokenize(policy.tokenizer, find_document(args.doc).text)
    config = SamplingConfig(G=args.G, thought_tokens=args.thought_tokens)
    compare_designs(
        policy, teacher, ids, args.positions, SamplingConfig(G=2, thought_tokens=4), designs="all"
    )  # warm-up

    seconds: dict[str, float] = {}
    for name in ["all", *DESIGNS]:
        start = time.perf_counter()
        compare_designs(policy, teacher, ids, args.positions, config, designs=name)
        seconds[name] = time.perf_counter() - start
        print(f"{name:>11}: {seconds[name]:.1f} s", flush=True)
    worst = max((n for n in DESIGNS), key=lambda n: seconds[n])
    print(
        f"\nmachine: {torch.get_num_threads()} torch threads, torch {torch.__version__}; {args.model}, {args.doc}, "
        f"{args.positions}, G={args.G}, budget {args.thought_tokens}"
    )
    print(
        f"all designs: {seconds['all']:.1f} s; most expensive single design ({worst}): {seconds[worst]:.1f} s; "
        f"ratio {seconds['all'] / seconds[worst]:.2f} (target < 2)"
    )


if __name__ == "__main__":
    main()
