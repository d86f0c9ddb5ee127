"""Reward map: the workbench engine vs the plain per-position loop a user would write, in one run.

    .venv/bin/python benchmarks/reward_map.py [--model gemma3-270m] [--positions every:8] [-G 4]
        [--thought-tokens 32] [--doc math-01] [--repeats 3]

The plain loop, for each position t: a no-think forward over ids[:t]; generate(num_return_sequences=G)
from ids[:t] + "<think>" stopping at "</think>"; then one left-padded forward over the G sequences
context + <think> + thought + </think> (logits only for the last position) to score x_t. The workbench: one teacher pass over the document,
then every (position, thought) row decoded together over a shared prefix cache.

Both run the same model, dtype, settings and document in this process, interleaved (W P W P ...), and
the table reports thought tokens per second *including scoring* and their ratio. This CPU has bursts of
outside load: trust the ratio of medians, not one number.
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
from workbench.models import load_model, teacher_of  # noqa: E402
from workbench.rewards import reward_map  # noqa: E402
from workbench.runs import cpu_name  # noqa: E402
from workbench.thoughts import SamplingConfig, ThoughtTemplate  # noqa: E402


def plain_loop(handle, ids: list[int], positions: list[int], config: SamplingConfig, template: ThoughtTemplate):
    """What a user writes with transformers alone. Returns (thought tokens, mean reward)."""
    model, tok = handle.model, handle.tokenizer
    open_ids = template.open_ids(tok)
    close_ids = template.close_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    torch.manual_seed(config.seed)
    tokens = 0
    rewards = []
    with torch.inference_mode():
        for t in positions:
            target = ids[t]
            no_think = torch.log_softmax(model(torch.tensor([ids[:t]]), logits_to_keep=1).logits[0, -1].float(), -1)
            prompt = torch.tensor([ids[:t] + open_ids])
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
            batch = torch.tensor([[pad] * (longest - len(s)) + s for s in seqs])
            mask = torch.tensor([[0] * (longest - len(s)) + [1] * len(s) for s in seqs])
            position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
            logits = model(batch, attention_mask=mask, position_ids=position_ids, logits_to_keep=1).logits
            for k in range(len(seqs)):
                lp = torch.log_softmax(logits[k, -1].float(), -1)[target]
                rewards.append(float(lp - no_think[target]))
    return tokens, statistics.fmean(rewards)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--doc", default="math-01")
    ap.add_argument("--positions", default="every:8")
    ap.add_argument("-G", type=int, default=4)
    ap.add_argument("--thought-tokens", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3, help="workbench repeats (the plain loop runs ceil(repeats/2))")
    args = ap.parse_args()

    handle = load_model(args.model, dtype=args.dtype)
    teacher = teacher_of(handle)
    ids = tokenize(handle.tokenizer, find_document(args.doc).text, args.max_tokens)
    config = SamplingConfig(G=args.G, thought_tokens=args.thought_tokens)
    template = ThoughtTemplate()
    positions = select_positions(parse_positions(args.positions), len(ids), seed=config.seed)
    print(f"# {args.model} {args.dtype}, document {args.doc} ({len(ids)} tokens), {args.positions} -> "
          f"{len(positions)} positions, G={args.G}, budget {args.thought_tokens}", flush=True)

    # warm-up: first-call costs (kernel compilation, allocator) are not what we compare
    reward_map(handle, teacher, ids, args.positions, SamplingConfig(G=2, thought_tokens=4), template)
    plain_loop(handle, ids, positions[:1], SamplingConfig(G=2, thought_tokens=4), template)

    results: dict[str, list[float]] = {"workbench": [], "plain loop": []}
    rewards: dict[str, float] = {}
    plain_runs = max(1, (args.repeats + 1) // 2)
    for i in range(max(args.repeats, plain_runs)):
        if i < args.repeats:
            start = time.perf_counter()
            rm = reward_map(handle, teacher, ids, args.positions, config, template)
            elapsed = time.perf_counter() - start
            results["workbench"].append(rm.generated_tokens / elapsed)
            rewards["workbench"] = float(rm.rewards.mean())
            print(f"workbench  run {i + 1}: {rm.generated_tokens} tokens in {elapsed:.1f} s", flush=True)
        if i < plain_runs:
            start = time.perf_counter()
            tokens, mean_reward = plain_loop(handle, ids, positions, config, template)
            elapsed = time.perf_counter() - start
            results["plain loop"].append(tokens / elapsed)
            rewards["plain loop"] = mean_reward
            print(f"plain loop run {i + 1}: {tokens} tokens in {elapsed:.1f} s", flush=True)

    w = statistics.median(results["workbench"])
    p = statistics.median(results["plain loop"])
    print()
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}")
    print("| engine | thought tokens/s incl. scoring (median) | runs | mean reward (nats) |")
    print("|---|---|---|---|")
    print(f"| workbench reward_map | {w:.0f} | {len(results['workbench'])} | {rewards['workbench']:+.2f} |")
    print(f"| plain per-position loop | {p:.0f} | {len(results['plain loop'])} | {rewards['plain loop']:+.2f} |")
    print(f"\nratio workbench / plain loop: {w / p:.1f}x")


if __name__ == "__main__":
    main()
