"""Scaling: how the cost of a reward map grows with document length and G.

    python benchmarks/scaling.py [--model gemma3-270m] [--lengths 128,256,512,1024] [--G 1,4,16]
        [--every 8] [--thought-tokens 32] [--backend transformers] [--out benchmarks/scaling]

The document is the training corpus joined and cut to each length; positions are every k-th token
(so their number grows with the length, as in a real reward map); G thoughts per position. Every cell
is one `reward_map` call after a warm-up, timed end to end (teacher pass, sampling and scoring). Writes
OUT.json (every cell) and OUT.png (seconds vs length, one line per G; needs matplotlib) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sampler_backends import versions  # noqa: E402

from workbench.data import load_corpus, tokenize  # noqa: E402
from workbench.engine.thought import SamplingConfig, ThoughtTemplate
from workbench.models import load_model, teacher_of  # noqa: E402
from workbench.rewards import reward_map  # noqa: E402
from workbench.run_dirs import machine_name as machine


def plot(records: list[dict], title: str, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for G in sorted({r["G"] for r in records}):
        rows = sorted((r for r in records if r["G"] == G), key=lambda r: r["length"])
        xs = [r["length"] for r in rows]
        axes[0].plot(xs, [r["seconds"] for r in rows], marker="o", label=f"G = {G}")
        axes[1].plot(xs, [r["tokens_per_s"] for r in rows], marker="o", label=f"G = {G}")
    axes[0].set(xscale="log", yscale="log", xlabel="document tokens", ylabel="seconds per reward map")
    axes[1].set(xscale="log", xlabel="document tokens", ylabel="thought tokens / s (incl. scoring)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--lengths", default="128,256,512,1024")
    ap.add_argument("--G", default="1,4,16")
    ap.add_argument("--every", type=int, default=8, help="a position every k tokens")
    ap.add_argument("--thought-tokens", type=int, default=32)
    ap.add_argument("--backend", default="transformers")
    ap.add_argument("--out", default="benchmarks/scaling", help="writes OUT.json and OUT.png")
    args = ap.parse_args()

    handle = load_model(args.model, dtype=args.dtype)
    teacher = teacher_of(handle)
    text = "\n\n".join(doc.text for doc in load_corpus("train"))
    lengths = [int(n) for n in args.lengths.split(",")]
    all_ids = tokenize(handle.tokenizer, text, max(lengths))
    if len(all_ids) < max(lengths):
        raise SystemExit(f"the corpus has only {len(all_ids)} tokens; ask for shorter lengths")
    template = ThoughtTemplate()
    spec = f"every:{args.every}"
    for G in [int(g) for g in args.G.split(",")]:  # warm-up: engine start and compilation for each batch shape
        reward_map(
            handle,
            teacher,
            all_ids[:64],
            "every:16",
            SamplingConfig(G=G, thought_tokens=4),
            template,
            backend=args.backend,
            empty_reference=False,
        )
    records = []
    print(
        f"# {args.model} {args.dtype}, backend {args.backend}, {spec}, budget {args.thought_tokens}; "
        f"machine: {machine()}; {versions()}",
        flush=True,
    )
    for G in [int(g) for g in args.G.split(",")]:
        for n in lengths:
            config = SamplingConfig(G=G, thought_tokens=args.thought_tokens, seed=0)
            start = time.perf_counter()
            rm = reward_map(
                handle, teacher, all_ids[:n], spec, config, template, backend=args.backend, empty_reference=False
            )
            seconds = time.perf_counter() - start
            records.append(
                {
                    "G": G,
                    "length": n,
                    "positions": len(rm.positions),
                    "seconds": seconds,
                    "teacher_s": rm.timing["score_s"],
                    "sample_s": rm.timing["sample_s"],
                    "thought_tokens": rm.generated_tokens,
                    "tokens_per_s": rm.generated_tokens / seconds,
                }
            )
            print(
                f"G={G:<3d} length={n:<5d} positions={len(rm.positions):<4d} {seconds:7.1f} s "
                f"({rm.generated_tokens / seconds:.0f} thought tok/s)",
                flush=True,
            )

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f"reward map cost, {args.model} {args.dtype}, {spec}, budget {args.thought_tokens}; {machine()}"
    out.with_suffix(".json").write_text(
        json.dumps({"args": vars(args), "machine": machine(), "versions": versions(), "records": records}, indent=1)
    )
    print(f"\nmachine: {machine()}; {versions()}\n")
    print("| G | " + " | ".join(f"{n} tokens" for n in lengths) + " |")
    print("|---|" + "---|" * len(lengths))
    for G in sorted({r["G"] for r in records}):
        cells = {r["length"]: r for r in records if r["G"] == G}
        print(
            f"| {G} | "
            + " | ".join(f"{cells[n]['seconds']:.1f} s ({cells[n]['positions']} pos)" for n in lengths)
            + " |"
        )
    for G in sorted({r["G"] for r in records}):
        cells = {r["length"]: r for r in records if r["G"] == G}
        print(
            f"G={G}: time x{cells[lengths[-1]]['seconds'] / cells[lengths[0]]['seconds']:.1f} for length "
            f"x{lengths[-1] / lengths[0]:.0f}"
        )
    if plot(records, title, out.with_suffix(".png")):
        print(f"plot: {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
