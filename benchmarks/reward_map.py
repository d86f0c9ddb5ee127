"""Reward map: the workbench engine vs the plain per-position loop a user would write, in one run.

    .venv/bin/python benchmarks/reward_map.py [--model gemma3-270m] [--dtypes float32,bfloat16] [--positions every:8]
        [-G 4] [--thought-tokens 32] [--doc math-01] [--repeats 3] [--json OUT]

The plain loop, for each position t: a no-think forward over ids[:t]; generate(num_return_sequences=G)
from ids[:t] + "<think>" stopping at "</think>"; then one left-padded forward over the G sequences
context + <think> + thought + </think> (logits only for the last position) to score x_t. The workbench: one teacher pass over the document,
then every (position, thought) row decoded together over a shared prefix cache.

The second plain loop (`plain_fixed`, the one issue 30 measured against) is what a careful user writes without stop
strings: per position one generate(num_return_sequences=G, max_new_tokens=L, min_new_tokens=L), so every thought has
L tokens and the G sequences need no padding; one forward over them with logits_to_keep=1; one no-think forward with
logits_to_keep=1. `stop_strings` costs the first loop a string check per decode step, so its ratios read higher.

All run the same model, settings and document in this process, in every dtype asked for, interleaved
(W P W P ...), and the table reports thought tokens per second *including scoring*; the ratio compares each
engine at its fastest dtype on this CPU (bf16 is ~4x faster than fp32 on an AMX CPU and ~100x slower on an
AVX2-only one, so a fixed dtype would favour one side). A dtype that this CPU runs many times slower (a
64-token calibration forward decides) is measured once on a few positions. The CPU capability and kind are
printed first. This CPU has bursts of outside load: trust the ratio of medians, not one number.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.data import find_document, parse_positions, select_positions, tokenize  # noqa: E402
from workbench.engine.backends import backend_unavailable
from workbench.engine.thought import SamplingConfig, ThoughtTemplate
from workbench.models import load_model, teacher_of  # noqa: E402
from workbench.rewards import reward_map  # noqa: E402
from workbench.run_dirs import machine_name as machine


def plain_setup(handle, config: SamplingConfig, template: ThoughtTemplate):
    """What both plain loops start with: model, tokenizer, device, the markers' ids and the pad id; torch seeded."""
    tok = handle.tokenizer
    torch.manual_seed(config.seed)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    return handle.model, tok, handle.device, template.open_ids(tok), template.close_ids(tok), pad


def plain_loop(handle, ids: list[int], positions: list[int], config: SamplingConfig, template: ThoughtTemplate):
    """What a user writes with transformers alone. Returns (thought tokens, mean reward)."""
    model, tok, dev, open_ids, close_ids, pad = plain_setup(handle, config, template)
    tokens = 0
    rewards = []
    with torch.inference_mode():
        for t in positions:
            target = ids[t]
            no_think = torch.log_softmax(
                model(torch.tensor([ids[:t]], device=dev), logits_to_keep=1).logits[0, -1].float(), -1
            )
            prompt = torch.tensor([ids[:t] + open_ids], device=dev)
            out = model.generate(
                prompt,
                do_sample=config.temperature > 0,
                temperature=config.temperature,
                top_p=config.top_p,
                top_k=0,
                max_new_tokens=config.thought_tokens,
                num_return_sequences=config.G,
                stop_strings=[template.close],
                tokenizer=tok,
                pad_token_id=pad,
            )
            seqs = []
            for row in out[:, prompt.shape[1] :].tolist():
                thought = []
                for i in row:
                    if i == pad or i in (tok.eos_token_id,):
                        break
                    thought.append(i)
                text = tok.decode(thought)
                if template.close in text:  # drop the marker the model wrote; the canonical one is appended
                    while thought and template.close in tok.decode(thought):
                        thought.pop()
                tokens += len(thought)
                seqs.append(ids[:t] + open_ids + thought + close_ids)
            # score the G sequences in one forward: left-padded, so the last position is x_t's prediction
            longest = max(len(s) for s in seqs)
            batch = torch.tensor([[pad] * (longest - len(s)) + s for s in seqs], device=dev)
            mask = torch.tensor([[0] * (longest - len(s)) + [1] * len(s) for s in seqs], device=dev)
            position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
            logits = model(batch, attention_mask=mask, position_ids=position_ids, logits_to_keep=1).logits
            for k in range(len(seqs)):
                lp = torch.log_softmax(logits[k, -1].float(), -1)[target]
                rewards.append(float(lp - no_think[target]))
    return tokens, statistics.fmean(rewards)


def plain_loop_fixed(handle, ids: list[int], positions: list[int], config: SamplingConfig, template: ThoughtTemplate):
    """The plain loop without stop strings: every thought runs to the budget (min_new_tokens = max_new_tokens), so the
    G scored sequences have one length. Returns (thought tokens, mean reward)."""
    model, tok, dev, open_ids, close_ids, pad = plain_setup(handle, config, template)
    tokens = 0
    rewards = []
    with torch.inference_mode():
        for t in positions:
            target = ids[t]
            no_think = torch.log_softmax(
                model(torch.tensor([ids[:t]], device=dev), logits_to_keep=1).logits[0, -1].float(), -1
            )
            prompt = torch.tensor([ids[:t] + open_ids], device=dev)
            out = model.generate(
                prompt,
                do_sample=config.temperature > 0,
                temperature=config.temperature,
                top_p=config.top_p,
                top_k=0,
                max_new_tokens=config.thought_tokens,
                min_new_tokens=config.thought_tokens,
                num_return_sequences=config.G,
                pad_token_id=pad,
            )
            tokens += int(out[:, prompt.shape[1] :].numel())
            close = torch.tensor([close_ids] * out.shape[0], device=dev)
            logits = model(torch.cat([out, close], dim=1), logits_to_keep=1).logits
            lp = torch.log_softmax(logits[:, -1].float(), -1)[:, target]
            rewards.extend((lp - no_think[target]).tolist())
    return tokens, statistics.fmean(rewards)


def calibrate(handles: dict[str, object], ids: list[int]) -> dict[str, float]:
    """Seconds for one no-think forward over 64 tokens, per dtype: tells which dtype this CPU runs slowly."""
    from workbench.engine.scorer import no_think_scores

    out = {}
    for dtype, handle in handles.items():
        no_think_scores(handle, ids[:16])  # warm-up
        start = time.perf_counter()
        no_think_scores(handle, ids[:64])
        out[dtype] = time.perf_counter() - start
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument(
        "--dtypes",
        default="float32,bfloat16",
        help="dtypes to run both engines in; each engine is compared at its fastest (default: both)",
    )
    ap.add_argument("--doc", default="math-01")
    ap.add_argument("--positions", default="every:8")
    ap.add_argument("-G", type=int, default=4)
    ap.add_argument("--thought-tokens", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument(
        "--engines",
        default="workbench,plain,plain_fixed,vllm",
        help="comma-separated from workbench, plain (stop strings), plain_fixed (fixed-length thoughts, no "
        "stop strings), vllm (the workbench's reward map on its vLLM backend)",
    )
    ap.add_argument(
        "--repeats", type=int, default=3, help="workbench/vllm repeats (the plain loop runs ceil(repeats/2))"
    )
    ap.add_argument(
        "--slow-factor",
        type=float,
        default=4.0,
        help="a dtype whose calibration forward is this many times slower than the fastest one is measured "
        "on --slow-positions positions only, once (bf16 on an AVX2-only CPU would take hours)",
    )
    ap.add_argument(
        "--slow-positions",
        type=int,
        default=2,
        help="positions for a slow dtype; 0 does not run it (its calibration is still reported)",
    )
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    args = ap.parse_args()

    from workbench.hardware import choose_dtype, cpu_capability, cpu_kind

    auto = choose_dtype("auto", "cpu")
    print(f"# CPU: {cpu_kind()}", flush=True)
    print(f"# torch CPU capability {cpu_capability()}; 'auto' means {auto.describe()}", flush=True)
    dtypes = args.dtypes.split(",")
    handles = {dt: load_model(args.model, dtype=dt) for dt in dtypes}
    teachers = {dt: teacher_of(h) for dt, h in handles.items()}
    first = handles[dtypes[0]]
    ids = tokenize(first.tokenizer, find_document(args.doc).text, args.max_tokens)
    config = SamplingConfig(G=args.G, thought_tokens=args.thought_tokens)
    template = ThoughtTemplate()
    positions = select_positions(parse_positions(args.positions), len(ids), seed=config.seed)
    seconds = calibrate(handles, ids)
    fastest = min(seconds.values())
    slow = {dt for dt, sec in seconds.items() if sec > args.slow_factor * fastest}
    print(
        f"# {args.model}, document {args.doc} ({len(ids)} tokens), {args.positions} -> {len(positions)} positions, "
        f"G={args.G}, budget {args.thought_tokens}; {machine()}",
        flush=True,
    )
    print(
        "# calibration (one 64-token forward): "
        + ", ".join(f"{dt} {sec:.2f} s" for dt, sec in seconds.items())
        + (
            f"; slow here: {', '.join(sorted(slow))} (measured on {args.slow_positions} positions, once)"
            if slow
            else ""
        ),
        flush=True,
    )

    def engine_run(backend: str, dtype: str):
        def run(cfg: SamplingConfig, doc: list[int], chosen: list[int]):
            rm = reward_map(
                handles[dtype],
                teachers[dtype],
                doc,
                "at:" + ",".join(map(str, chosen)),
                cfg,
                template,
                backend=backend,
                empty_reference=False,
            )
            return rm.generated_tokens, float(rm.rewards.mean())

        return run

    def plain(dtype: str):
        return lambda cfg, doc, chosen: plain_loop(handles[dtype], doc, chosen, cfg, template)

    def plain_fixed(dtype: str):
        return lambda cfg, doc, chosen: plain_loop_fixed(handles[dtype], doc, chosen, cfg, template)

    makers = {
        "workbench": lambda dt: engine_run("transformers", dt),
        "vllm": lambda dt: engine_run("vllm", dt),
        "plain": plain,
        "plain_fixed": plain_fixed,
    }
    runs: list[tuple[str, str]] = []  # (engine, dtype)
    for name in args.engines.split(","):
        if name not in makers:
            raise SystemExit(f"unknown engine {name!r}; choose from {', '.join(makers)}")
        reason = backend_unavailable("vllm") if name == "vllm" else None
        if reason:
            print(f"# skipped engine vllm: {reason}", flush=True)
            continue
        runs.extend((name, dt) for dt in dtypes)
    not_run = [key for key in runs if key[1] in slow] if args.slow_positions == 0 else []
    runs = [key for key in runs if key not in not_run]
    best_dtype = min(seconds, key=seconds.get)
    for name, dtype in not_run:
        print(
            f"# not run: {name} {dtype} (its calibration forward took {seconds[dtype] / fastest:.0f}x as long as "
            f"{best_dtype}'s; --slow-positions N runs it on N positions)",
            flush=True,
        )
    runners = {key: makers[key[0]](key[1]) for key in runs}
    chosen_for = {key: positions[: args.slow_positions] if key[1] in slow else positions for key in runs}
    # warm-up: first-call costs (engine start, allocator) are not what we compare
    for key in runs:
        start = time.perf_counter()
        runners[key](SamplingConfig(G=2, thought_tokens=4), ids[:48], [16, 32])
        print(f"# {key[0]} {key[1]}: warm-up {time.perf_counter() - start:.1f} s", flush=True)

    results: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    rewards: dict[tuple[str, str], float] = {}
    plain_runs = max(1, (args.repeats + 1) // 2)
    for i in range(args.repeats):
        for key in runs:
            name, dtype = key
            if (name.startswith("plain") and i >= plain_runs) or (dtype in slow and i >= 1):
                continue
            start = time.perf_counter()
            tokens, reward_mean = runners[key](config, ids, chosen_for[key])
            elapsed = time.perf_counter() - start
            results[key].append(tokens / elapsed)
            rewards[key] = reward_mean
            print(f"{name:10s} {dtype:9s} run {i + 1}: {tokens} tokens in {elapsed:.1f} s", flush=True)

    labels = {
        "workbench": "workbench reward_map",
        "plain": "plain per-position loop (stop strings)",
        "plain_fixed": "plain loop, fixed-length thoughts",
        "vllm": "workbench reward_map (vLLM)",
    }
    med = {key: statistics.median(results[key]) for key in runs}
    print()
    print(f"machine: {machine()}; CPU: {cpu_kind()}; torch {torch.__version__}")
    print("| engine | dtype | positions | thought tokens/s incl. scoring (median) | runs | mean reward (nats) |")
    print("|---|---|---|---|---|---|")
    for key in runs:
        print(
            f"| {labels[key[0]]} | {key[1]} | {len(chosen_for[key])} | {med[key]:.1f} | {len(results[key])} | "
            f"{rewards[key]:+.2f} |"
        )
    best = {}
    for name in dict.fromkeys(k[0] for k in runs):
        dt = max((k[1] for k in runs if k[0] == name), key=lambda d: med[(name, d)])
        best[name] = (dt, med[(name, dt)])
    print()
    for name, (dt, rate) in best.items():
        print(f"fastest {name}: {dt} ({rate:.1f} thought tokens/s)")
    ratios = {}
    if "workbench" in best:
        for name, (dt, rate) in best.items():
            if name != "workbench":
                ratios[name] = best["workbench"][1] / rate
                print(
                    f"ratio workbench ({best['workbench'][0]}) / {name} ({dt}), each at its fastest dtype: "
                    f"{ratios[name]:.2f}x"
                )
    if args.json:
        import json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "machine": machine(),
                    "cpu": cpu_kind(),
                    "cpu_capability": cpu_capability(),
                    "auto_dtype": auto.as_dict(),
                    "torch": torch.__version__,
                    "calibration_s": seconds,
                    "slow_dtypes": sorted(slow),
                    "results": [
                        {
                            "engine": k[0],
                            "dtype": k[1],
                            "positions": len(chosen_for[k]),
                            "tokens_per_s": results[k],
                            "median": med[k],
                            "reward_mean": rewards[k],
                        }
                        for k in runs
                    ],
                    "best": best,
                    "ratios": ratios,
                    "not_run": [list(k) for k in not_run],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
