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

from workbench.runs import machine_name as machine  # noqa: E402

from workbench.data import find_document, parse_positions, select_positions, tokenize  # noqa: E402
from workbench.models import load_model, teacher_of  # noqa: E402
from workbench.rewards import reward_map  # noqa: E402
from workbench.thoughts import SamplingConfig, ThoughtTemplate, backend_unavailable  # noqa: E402


def plain_loop(handle, ids: list[int], positions: list[int], config: SamplingConfig, template: ThoughtTemplate):
    """What a user writes with transformers alone. Returns (thought tokens, mean reward)."""
    model, tok = handle.model, handle.tokenizer
    dev = handle.device
    open_ids = template.open_ids(tok)
    close_ids = template.close_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    torch.manual_seed(config.seed)
    tokens = 0
    rewards = []
    with torch.inference_mode():
        for t in positions:
            target = ids[t]
            no_think = torch.log_softmax(model(torch.tensor([ids[:t]], device=dev), logits_to_keep=1).logits[0, -1].float(), -1)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--doc", default="math-01")
    ap.add_argument("--positions", default="every:8")
    ap.add_argument("-G", type=int, default=4)
    ap.add_argument("--thought-tokens", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--engines", default="workbench,plain,vllm",
                    help="comma-separated from workbench, plain, vllm (the workbench's reward map on its vLLM backend)")
    ap.add_argument("--repeats", type=int, default=3, help="workbench/vllm repeats (the plain loop runs ceil(repeats/2))")
    args = ap.parse_args()

    handle = load_model(args.model, dtype=args.dtype)
    teacher = teacher_of(handle)
    ids = tokenize(handle.tokenizer, find_document(args.doc).text, args.max_tokens)
    config = SamplingConfig(G=args.G, thought_tokens=args.thought_tokens)
    template = ThoughtTemplate()
    positions = select_positions(parse_positions(args.positions), len(ids), seed=config.seed)
    print(f"# {args.model} {args.dtype}, document {args.doc} ({len(ids)} tokens), {args.positions} -> "
          f"{len(positions)} positions, G={args.G}, budget {args.thought_tokens}; {machine()}", flush=True)

    def engine_run(backend: str):
        def run(cfg: SamplingConfig, doc: list[int], spec: str):
            rm = reward_map(handle, teacher, doc, spec, cfg, template, backend=backend, empty_reference=False)
            return rm.generated_tokens, float(rm.rewards.mean())
        return run

    def plain(cfg: SamplingConfig, doc: list[int], spec: str):
        return plain_loop(handle, doc, select_positions(parse_positions(spec), len(doc), seed=cfg.seed), cfg, template)

    runners = {"workbench": engine_run("transformers"), "vllm": engine_run("vllm"), "plain": plain}
    engines = []
    for name in args.engines.split(","):
        if name not in runners:
            raise SystemExit(f"unknown engine {name!r}; choose from {', '.join(runners)}")
        reason = backend_unavailable("vllm") if name == "vllm" else None
        if reason:
            print(f"# skipped engine vllm: {reason}", flush=True)
        else:
            engines.append(name)
    # warm-up: first-call costs (engine start, kernel compilation, allocator) are not what we compare
    for name in engines:
        start = time.perf_counter()
        runners[name](SamplingConfig(G=2, thought_tokens=4), ids[:48], "every:16")
        print(f"# {name}: warm-up {time.perf_counter() - start:.1f} s", flush=True)

    results: dict[str, list[float]] = {name: [] for name in engines}
    rewards: dict[str, float] = {}
    plain_runs = max(1, (args.repeats + 1) // 2)
    for i in range(args.repeats):
        for name in engines:
            if name == "plain" and i >= plain_runs:
                continue
            start = time.perf_counter()
            tokens, mean_reward = runners[name](config, ids, args.positions)
            elapsed = time.perf_counter() - start
            results[name].append(tokens / elapsed)
            rewards[name] = mean_reward
            print(f"{name:10s} run {i + 1}: {tokens} tokens in {elapsed:.1f} s", flush=True)

    labels = {"workbench": "workbench reward_map (transformers backend)", "plain": "plain per-position loop",
              "vllm": "workbench reward_map (vLLM backend)"}
    med = {name: statistics.median(results[name]) for name in engines}
    print()
    print(f"machine: {machine()}; torch {torch.__version__}")
    print("| engine | thought tokens/s incl. scoring (median) | runs | mean reward (nats) |")
    print("|---|---|---|---|")
    for name in engines:
        print(f"| {labels[name]} | {med[name]:.0f} | {len(results[name])} | {rewards[name]:+.2f} |")
    print()
    for name in engines:
        if name != "workbench" and "workbench" in med:
            print(f"ratio workbench / {name}: {med['workbench'] / med[name]:.2f}x")


if __name__ == "__main__":
    main()
