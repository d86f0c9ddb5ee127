"""Correctness of the sampler's scores on this machine's device (e.g. a GPU): with-thought log-probs vs a plain forward.

    python benchmarks/device_check.py [--model gemma3-270m] [--positions every:40] [-G 4] [--thought-tokens 24]

The test suite checks the shared-prefix engine against plain transformers forwards on CPU. On a GPU the
attention kernels, masks and dtypes differ, so this script repeats the check where it runs: it samples
thoughts with `ThoughtSampler` (fp32, then bf16) and recomputes log p(x_t | scored_ids) for every thought
with one plain fp32 forward per sequence. It prints the largest and median differences and exits non-zero
when fp32 differs by more than --tol-fp32 nats or bf16 by more than --tol-bf16 (median).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.data import find_document, parse_positions, select_positions, tokenize  # noqa: E402
from workbench.engine.sampler import ThoughtSampler
from workbench.engine.thought import SamplingConfig, ThoughtTemplate
from workbench.models import load_model  # noqa: E402
from workbench.run_dirs import machine_name as machine


def plain_logps(model, thoughts, ids) -> list[float]:
    out = []
    with torch.inference_mode():
        for th in thoughts:
            inp = torch.tensor([th.scored_ids], device=next(model.parameters()).device)
            logits = model(inp, logits_to_keep=1).logits[0, -1].float()
            out.append(float(torch.log_softmax(logits, -1)[ids[th.position]]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--doc", default="math-01")
    ap.add_argument("--positions", default="every:40")
    ap.add_argument("-G", type=int, default=4)
    ap.add_argument("--thought-tokens", type=int, default=24)
    ap.add_argument("--tol-fp32", type=float, default=5e-3)
    ap.add_argument("--tol-bf16", type=float, default=0.15)
    args = ap.parse_args()

    reference = load_model(args.model, dtype="float32")
    ids = tokenize(reference.tokenizer, find_document(args.doc).text, 400)
    positions = select_positions(parse_positions(args.positions), len(ids))
    config = SamplingConfig(G=args.G, thought_tokens=args.thought_tokens, temperature=1.0, seed=0)
    print(f"# {args.model} on {reference.device}; {machine()}; {len(positions)} positions x G={args.G}", flush=True)
    failed = False
    for dtype, tol in (("float32", args.tol_fp32), ("bfloat16", args.tol_bf16)):
        handle = reference if dtype == "float32" else load_model(args.model, dtype=dtype)
        thoughts = ThoughtSampler(handle, ThoughtTemplate(), config).sample(ids, positions)
        ref = plain_logps(reference.model, thoughts, ids)
        diffs = [abs(th.logp_with_thought - r) for th, r in zip(thoughts, ref)]
        worst, median = max(diffs), statistics.median(diffs)
        bad = (worst if dtype == "float32" else median) > tol
        failed |= bad
        print(
            f"{dtype}: {len(thoughts)} thoughts (mean length {statistics.fmean(t.length for t in thoughts):.1f}), "
            f"|sampler - plain fp32 forward| max {worst:.2e}, median {median:.2e} nats -> "
            f"{'FAIL' if bad else 'ok'} (tolerance {tol} on the {'max' if dtype == 'float32' else 'median'})",
            flush=True,
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
