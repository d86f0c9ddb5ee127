"""One RLP training step: the workbench's RLPTrainer vs the same step written on TRL's GRPOTrainer.

    .venv/bin/python benchmarks/train_step.py [--model smollm2-135m] [--contexts 8] [--G 4]
        [--thought-tokens 32] [--steps 5] [--rounds 1] [--engines workbench,trl] [--json OUT]

Both engines run the same RLP step, at the same sizes, on the same contexts:
- contexts: `--contexts` (doc, position t) pairs per step, drawn by the workbench's own `draw_contexts`
  (2 documents x contexts/2 positions; seed 0, step s) from corpus:train cut to 512 tokens; TRL gets the
  same pairs, in the same order, as text prompts decode(ids[:t]) + "<think>" (it tokenises text prompts);
- G thoughts per context, `--thought-tokens` tokens, temperature 0.7, top-p 1, learning rate 1e-6 constant,
  AdamW (0.9, 0.999), no weight decay, grad-norm clip 1.0, clip range 0.2, one optimizer step per batch;
- reward r = log p_theta(x_t | x_<t, <think> c </think>) - log p_phi(x_t | x_<t) with phi an EMA teacher
  (tau 0.999, updated after every optimizer step), advantages r - mean_group(r) times G/(G-1) (RLOO),
  no std scaling, loss averaged over each thought's length then over the B*G thoughts, beta = 0.
- workbench: `RLPTrainer` (accelerate, mixed_precision bf16, rollout_dtype bfloat16: shared-prefix thought
  sampler and scoring on bf16 inference copies, fp32 master weights and fp32 EMA), micro-batches of 8 rows.
  One step = `trainer.train_step(step)` + `trainer.refresh_rollout()` (what `Trainer.train` does, minus
  evals, checkpoints and metrics files).
- trl: `GRPOTrainer` with `workbench.trl_rewards.trl_reward_function("rlp", ...)` as its reward function
  and an EMA-teacher `TrainerCallback` (on_step_end). GRPOConfig: num_generations=G,
  max_completion_length=thought tokens, per_device_train_batch_size=8 (completions per micro-batch, like
  the workbench's micro_batch_rows) x gradient_accumulation_steps=contexts*G/8, so one generation batch =
  one optimizer step = contexts x G completions; loss_type="grpo" (per-sequence length average),
  scale_rewards="none", beta=0, epsilon=0.2, temperature=0.7, top_k=0, top_p=1,
  lr_scheduler_type="constant", max_grad_norm=1, use_cpu=True, bf16=True (accelerate autocast bf16 over
  fp32 master weights: generation and the log-prob forward/backward), gradient_checkpointing=False,
  shuffle_dataset=False (so it sees the workbench's contexts in order), report_to="none", no saving,
  no logging inside the measured steps. The reward scores on bf16 copies of the policy and of the fp32 EMA
  teacher, refreshed by the callback after every optimizer step (the same arrangement as the workbench's
  inference copies). A step is timed from on_step_begin to on_step_end (generation, reward, the four
  micro-batches, optimizer, EMA callback); the TRL engine's output also records the time between steps.
- trl-compact (optional engine): the same, plus the compact fused LM head (see workaround 5).
- workbench-vllm / workbench-rows (optional engines): the workbench step sampling with the vLLM backend, or with
  the loss pass feeding one row per thought instead of packing each document's prefix once.

TRL workarounds the RLP step needs (reference card `rewards.md`, "Pitfalls", trl 1.16), and what this
benchmark does about each:
1. The reward function needs a handle on the live policy. APPLIED: `trl_reward_function` gets a bf16
   inference copy of the model TRL trains, refreshed after every optimizer step (so it holds the weights
   the thoughts were sampled with).
2. The EMA teacher needs its own callback (`sync_ref_model` refuses beta = 0 and serves the KL
   reference). APPLIED: `EMATeacher.on_step_end`, phi <- 0.999 phi + 0.001 theta on fp32 masters,
   copied into the bf16 teacher the reward uses.
3. Stopping at "</think>" needs a custom rollout (TRL cuts only at EOS, so tokens after the marker are
   trained). NOT APPLIED: TRL samples the full budget; the reward function cuts each completion at the
   marker/EOS for scoring, but TRL trains every sampled token. SmolLM2 closes ~0% of its thoughts within
   32 tokens (rewards.md), so this changes what is trained on, not the step's cost. Thought tokens/s counts
   the thought before the marker/EOS for both engines (the TRL output also records all sampled tokens).
4. The RLOO factor G/(G-1) has no option. APPLIED: the reward is multiplied by G/(G-1) (exact, since
   the advantage with scale_rewards="none" is r - mean r).
5. On CPU TRL's fused LM head runs the prompt positions through the vocabulary too (its compact path is
   GPU-only), and gradient checkpointing is on by default. APPLIED: gradient_checkpointing=False for both
   TRL engines. The compact head is APPLIED only by the engine `trl-compact`
   (`trl.trainer.utils._use_triton` patched to say yes, so only completion positions reach the LM head;
   the vocabulary tiles still run in torch); `trl` is TRL as configured.
Also: TRL tokenises the text prompt, which can differ from the ids the reward scores (a merge across
"<think>"); the share of such prompts is printed (`retokenised`).

Each engine runs in its own subprocess (its own peak RSS, no shared memory), one after another; with
--rounds > 1 they are interleaved (W T W T ...). Per engine: 1 warm-up step, then --steps timed steps;
the table gives the median step time over all timed steps, thought tokens per second (sampled thought
tokens / step time, median over steps) and the peak RSS of the engine's process (max over rounds; it
includes loading). This CPU has bursts of outside load: read the ratios, not one absolute number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.hardware import cpu_model  # noqa: E402
from workbench.run_dirs import package_versions

# workbench-vllm: sampler_backend vllm; workbench-rows: share_prefix_in_loss off (one row per thought in the loss pass)
ENGINES = ("workbench", "workbench-vllm", "workbench-rows", "trl", "trl-compact")
WORKBENCH_ENGINES = {
    "workbench": {},
    "workbench-vllm": {"sampler_backend": "vllm"},
    "workbench-rows": {"share_prefix_in_loss": False},
}
PREFIX = "#"  # child lines starting with this are shown live by the parent


def say(msg: str) -> None:
    print(f"{PREFIX} {msg}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def split_contexts(contexts: int) -> tuple[int, int]:
    """docs_per_step x positions_per_doc = contexts (2 documents when contexts is even)."""
    docs = 2 if contexts % 2 == 0 else 1
    return docs, contexts // docs


def rlp_config(args, output_dir: str, **fields):
    from workbench.training.configs import config_from_dict

    docs, positions = split_contexts(args.contexts)
    return config_from_dict(
        dict(
            trainer="rlp",
            model=args.model,
            output_dir=output_dir,
            max_steps=args.steps + 1,
            seed=args.seed,
            docs_per_step=docs,
            positions_per_doc=positions,
            G=args.G,
            thought_tokens=args.thought_tokens,
            temperature=0.7,
            top_p=1.0,
            learning_rate=1e-6,
            lr_scheduler="constant",
            mixed_precision="bf16",
            rollout_dtype="bfloat16",
            eval_data="",
            checkpoint_every=10**6,
            progress=False,
            threads=args.threads,
            **fields,
        )
    )


# --------------------------------------------------------------------------- workbench engine


def run_workbench(args, tmp: str, **fields) -> dict:
    import torch

    from workbench.training.launch import trainer_for

    cfg = rlp_config(args, str(Path(tmp) / "run"), **fields)
    trainer = trainer_for(cfg, log=lambda msg: None)
    rss_loaded = peak_rss_mb()
    steps = []
    for step in range(1, args.steps + 2):
        torch.manual_seed(cfg.seed * 100_003 + step)  # as Trainer.train does
        t0 = time.perf_counter()
        row = trainer.train_step(step)
        trainer.step = step
        trainer.refresh_rollout()
        seconds = time.perf_counter() - t0
        thought_tokens = int(round(row["thought_tokens_mean"] * row["thoughts"]))
        steps.append(
            {
                "step": step,
                "seconds": seconds,
                "thought_tokens": thought_tokens,
                "thoughts": row["thoughts"],
                "contexts": row["contexts"],
                "reward_mean": row["reward_mean"],
                "time_sample_s": row["time_sample_s"],
                "time_loss_s": row["time_loss_s"],
                "warmup": step == 1,
            }
        )
        say(
            f"workbench step {step}{' (warm-up)' if step == 1 else ''}: {seconds:.2f} s, {row['contexts']} contexts, "
            f"{row['thoughts']} thoughts, {thought_tokens} thought tokens, reward {row['reward_mean']:+.2f} "
            f"(sample+score {row['time_sample_s']:.2f} s, loss {row['time_loss_s']:.2f} s)"
        )
    return {
        "steps": steps,
        "rss_after_load_mb": rss_loaded,
        "settings": {
            "mixed_precision": trainer.accelerator.mixed_precision,
            "rollout_dtype": cfg.rollout_dtype,
            "micro_batch_rows": cfg.micro_batch_rows,
            "docs_per_step": cfg.docs_per_step,
            "positions_per_doc": cfg.positions_per_doc,
            "share_prefix_in_loss": cfg.share_prefix_in_loss,
            "packed_loss": trainer.packed_loss,
        },
    }


# --------------------------------------------------------------------------- TRL engine


def trl_rows(args, tokenizer, open_text: str) -> tuple[dict, float]:
    """The workbench's contexts for steps 1 .. steps+1, in order, as GRPOTrainer prompt rows."""
    import numpy as np

    from workbench.engine.thought import ThoughtTemplate
    from workbench.training.rlp_trainer import RLPTrainer
    from workbench.training.trainer import Trainer, load_docs

    cfg = rlp_config(args, "unused")
    train_ids = Trainer._tokenized(
        SimpleNamespace(tokenizer=tokenizer, config=cfg), load_docs(cfg.train_data), "train_data"
    )
    fake = SimpleNamespace(config=cfg, train_ids=train_ids)
    open_ids = ThoughtTemplate().open_ids(tokenizer)
    rows: dict[str, list] = {"prompt": [], "document_ids": [], "position": []}
    retokenised = 0
    for step in range(1, args.steps + 2):
        rng = np.random.default_rng([cfg.seed, step, 0])  # exactly RLPTrainer.train_step's draw
        for ctx in RLPTrainer.draw_contexts(fake, rng):
            ids = train_ids[ctx.doc]
            skip = 1 if tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id else 0
            for t in ctx.positions:
                prompt = tokenizer.decode(ids[skip:t]) + open_text
                rows["prompt"].append(prompt)
                rows["document_ids"].append(ids)
                rows["position"].append(t)
                retokenised += int(list(tokenizer(prompt).input_ids) != ids[:t] + open_ids)
    return rows, retokenised / max(1, len(rows["prompt"]))


def run_trl(args, tmp: str, compact: bool) -> dict:
    import copy

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from workbench.engine.thought import ThoughtTemplate, stop_token_ids
    from workbench.models import ModelHandle, load_model
    from workbench.training.rl_math import ema_update_
    from workbench.trl_rewards import cut_thought, trl_reward_function

    if compact:
        import trl.trainer.utils as trl_utils

        trl_utils._use_triton = lambda device: True  # compact fused head: only completion positions hit the LM head

    G, tau = args.G, 0.999
    policy = load_model(args.model, dtype="float32")
    model, tok = policy.model, policy.tokenizer
    model.requires_grad_(True)  # load_model returns a frozen model for scoring

    def bf16_copy() -> torch.nn.Module:
        clone = copy.deepcopy(model).to(torch.bfloat16)
        clone.requires_grad_(False)
        return clone.eval()

    scorer, teacher = bf16_copy(), bf16_copy()  # the policy's weights for scoring; the EMA teacher phi
    ema = [p.detach().clone().float() for p in model.parameters()]  # phi's fp32 master (lazy init = theta)
    template = ThoughtTemplate()
    rlp = trl_reward_function(
        "rlp",
        ModelHandle(scorer, tok, policy.name, source=policy.source),
        ModelHandle(teacher, tok, f"ema-teacher({policy.name})", source=policy.source, role="teacher"),
        template,
    )
    close_ids = template.close_ids(tok)
    eos = set(stop_token_ids(ModelHandle(scorer, tok, policy.name, source=policy.source)))
    counters = {"thought_tokens": 0, "sampled_tokens": 0, "completions": 0, "rewards": []}

    def reward(prompts, completions, completion_ids, **kwargs):
        raw = rlp(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        counters["completions"] += len(completion_ids)
        counters["sampled_tokens"] += sum(len(c) for c in completion_ids)
        counters["thought_tokens"] += sum(
            len(cut_thought(list(c), close_ids, template.close, eos, tok)) for c in completion_ids
        )
        counters["rewards"].extend(raw)
        return [r * G / (G - 1) for r in raw]  # RLOO: A = G/(G-1) (r - mean r), exact with scale_rewards="none"

    reward.__name__ = "rlp"

    class EMATeacher(TrainerCallback):
        """phi <- tau phi + (1 - tau) theta after every optimizer step; the bf16 copies get the new weights."""

        def on_step_end(self, _args, state, control, **kwargs):
            with torch.no_grad():
                ema_update_(ema, model.parameters(), tau)
                for dst, src in zip(teacher.parameters(), ema):
                    dst.copy_(src)
                for dst, src in zip(scorer.parameters(), model.parameters()):
                    dst.copy_(src)

    steps: list[dict] = []

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = 0.0
            self.last_end: float | None = None

        def on_step_begin(self, _args, state, control, **kwargs):
            self.t0 = time.perf_counter()
            for k in ("thought_tokens", "sampled_tokens", "completions"):
                counters[k] = 0
            counters["rewards"] = []

        def on_step_end(self, _args, state, control, **kwargs):
            end = time.perf_counter()
            seconds = end - self.t0
            step = state.global_step
            rewards = counters["rewards"]
            steps.append(
                {
                    "step": step,
                    "seconds": seconds,
                    "thought_tokens": counters["thought_tokens"],
                    "sampled_tokens": counters["sampled_tokens"],
                    "thoughts": counters["completions"],
                    "contexts": counters["completions"] // G,
                    "reward_mean": statistics.fmean(rewards) if rewards else float("nan"),
                    "end_to_end_s": None if self.last_end is None else end - self.last_end,
                    "warmup": step == 1,
                }
            )
            self.last_end = end
            say(
                f"{'trl-compact' if compact else 'trl'} step {step}{' (warm-up)' if step == 1 else ''}: {seconds:.2f} s, "
                f"{counters['completions'] // G} contexts, {counters['completions']} thoughts, "
                f"{counters['thought_tokens']} thought tokens ({counters['sampled_tokens']} sampled), "
                f"reward {steps[-1]['reward_mean']:+.2f}"
            )

    rows, retokenised = trl_rows(args, tok, template.open)
    n_rows = args.contexts * G
    micro = 8 if n_rows % 8 == 0 else n_rows
    grpo = GRPOConfig(
        output_dir=str(Path(tmp) / "trl"),
        seed=args.seed,
        max_steps=args.steps + 1,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=n_rows // micro,
        num_generations=G,
        max_completion_length=args.thought_tokens,
        temperature=0.7,
        top_p=1.0,
        top_k=0,
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        max_grad_norm=1.0,
        beta=0.0,
        loss_type="grpo",
        scale_rewards="none",
        epsilon=0.2,
        num_iterations=1,
        use_cpu=not torch.cuda.is_available(),
        bf16=True,
        gradient_checkpointing=False,
        shuffle_dataset=False,
        report_to="none",
        save_strategy="no",
        logging_steps=10**6,
        disable_tqdm=True,
        log_completions=False,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model,
        processing_class=tok,
        reward_funcs=[reward],
        args=grpo,
        train_dataset=Dataset.from_dict(rows),
        callbacks=[EMATeacher(), StepTimer()],  # in this order: the EMA update is inside the timed step
    )
    rss_loaded = peak_rss_mb()
    trainer.train()
    settings = {
        "bf16": grpo.bf16,
        "accelerate_mixed_precision": trainer.accelerator.mixed_precision,
        "autocast": bool(trainer.accelerator.native_amp),
        "per_device_train_batch_size": grpo.per_device_train_batch_size,
        "gradient_accumulation_steps": grpo.gradient_accumulation_steps,
        "generation_batch_size": grpo.generation_batch_size,
        "steps_per_generation": grpo.steps_per_generation,
        "num_generations": grpo.num_generations,
        "loss_type": grpo.loss_type,
        "scale_rewards": grpo.scale_rewards,
        "gradient_checkpointing": grpo.gradient_checkpointing,
        "compact_lm_head": compact,
        "optim": str(grpo.optim),
        "reward_scoring_dtype": "bfloat16",
        "retokenised_prompt_share": retokenised,
    }
    say(
        f"{'trl-compact' if compact else 'trl'}: {retokenised:.1%} of prompts re-tokenise differently from the scored ids"
    )
    return {"steps": steps, "rss_after_load_mb": rss_loaded, "settings": settings}


def child(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix=f"train-step-{args.child}-") as tmp:
        t0 = time.perf_counter()
        if args.child in WORKBENCH_ENGINES:
            out = run_workbench(args, tmp, **WORKBENCH_ENGINES[args.child])
        else:
            out = run_trl(args, tmp, compact=args.child == "trl-compact")
    out.update(
        engine=args.child,
        peak_rss_mb=peak_rss_mb(),
        wall_s=time.perf_counter() - t0,
        peak_gpu_mb=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0,
        gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        torch_threads=torch.get_num_threads(),
    )
    Path(args.child_out).write_text(json.dumps(out))


# --------------------------------------------------------------------------- parent


def engine_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        **package_versions(("torch", "transformers", "accelerate", "trl", "datasets", "vllm")),
    }


def spawn(engine: str, args, argv: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="train-step-out-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", engine, "--child-out", str(out)]
        env = {**os.environ, "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("HF_DATASETS_OFFLINE", "1")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        tail: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(PREFIX):
                print(line.rstrip(), flush=True)
            tail = (tail + [line.rstrip()])[-60:]
        code = proc.wait()
        if code != 0 or not out.exists():
            print("\n".join(tail), file=sys.stderr)
            raise SystemExit(f"engine {engine} failed (exit {code}); its last output is above")
        return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per engine run, after 1 warm-up step")
    ap.add_argument(
        "--contexts", type=int, default=8, help="contexts per step (workbench: 2 docs x contexts/2 positions)"
    )
    ap.add_argument("--G", type=int, default=4, help="thoughts per context")
    ap.add_argument("--thought-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1, help="runs per engine, interleaved")
    ap.add_argument("--engines", default="workbench,trl", help=f"comma-separated, from {', '.join(ENGINES)}")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per engine process (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write every step's numbers and the summary here")
    ap.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or any(e not in ENGINES for e in engines):
        ap.error(f"--engines must name some of {', '.join(ENGINES)}")
    if args.steps < 1 or args.rounds < 1 or args.contexts < 1 or args.G < 2 or args.thought_tokens < 1:
        ap.error("--steps, --rounds, --contexts, --thought-tokens must be >= 1 and --G >= 2")
    argv = [
        "--model",
        args.model,
        "--steps",
        str(args.steps),
        "--contexts",
        str(args.contexts),
        "--G",
        str(args.G),
        "--thought-tokens",
        str(args.thought_tokens),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
    ]
    docs, positions = split_contexts(args.contexts)
    print(
        f"# {args.model}: {args.contexts} contexts ({docs} docs x {positions} positions) x G={args.G} x "
        f"{args.thought_tokens} thought tokens, temperature 0.7, lr 1e-6; {args.steps} timed steps after 1 warm-up, "
        f"{args.rounds} round(s), engines {', '.join(engines)}",
        flush=True,
    )

    runs: dict[str, list[dict]] = {e: [] for e in engines}
    for r in range(args.rounds):
        for engine in engines:
            print(f"# round {r + 1}/{args.rounds}: {engine}", flush=True)
            runs[engine].append(spawn(engine, args, argv))

    summary = {}
    for engine, results in runs.items():
        timed = [s for res in results for s in res["steps"] if not s["warmup"]]
        summary[engine] = {
            "median_step_s": statistics.median(s["seconds"] for s in timed),
            "step_s_range": [min(s["seconds"] for s in timed), max(s["seconds"] for s in timed)],
            "thought_tokens_per_s": statistics.median(s["thought_tokens"] / s["seconds"] for s in timed),
            "thought_tokens_per_step": statistics.median(s["thought_tokens"] for s in timed),
            "peak_rss_mb": max(res["peak_rss_mb"] for res in results),
            "peak_gpu_mb": max(res.get("peak_gpu_mb", 0.0) for res in results),
            "reward_mean": statistics.fmean(s["reward_mean"] for s in timed),
            "median_loss_s": statistics.median(s["time_loss_s"] for s in timed) if "time_loss_s" in timed[0] else None,
            "timed_steps": len(timed),
            "settings": results[0]["settings"],
        }

    vers = engine_versions()
    threads = runs[engines[0]][0]["torch_threads"]
    print()
    gpu = runs[engines[0]][0].get("gpu")
    print(
        f"machine: {(gpu + ' + ') if gpu else ''}{cpu_model()}, {os.cpu_count()} cores, {threads} torch threads per engine process; "
        + ", ".join(f"{k} {v}" for k, v in vers.items())
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print()
    print(
        "| engine | step time s (median) | range s | thought tokens/s (median) | thought tokens/step | peak RSS MB | peak GPU MB | mean reward (nats) | timed steps |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for engine, s in summary.items():
        lo, hi = s["step_s_range"]
        print(
            f"| {engine} | {s['median_step_s']:.2f} | {lo:.2f} – {hi:.2f} | {s['thought_tokens_per_s']:.1f} | "
            f"{s['thought_tokens_per_step']:.0f} | {s['peak_rss_mb']:.0f} | {s['peak_gpu_mb']:.0f} | {s['reward_mean']:+.2f} | {s['timed_steps']} |"
        )
    ratios = {}
    if "workbench" in summary:
        w = summary["workbench"]
        print()
        for engine in (e for e in summary if e != "workbench"):
            s = summary[engine]
            ratios[engine] = {
                "step_time": s["median_step_s"] / w["median_step_s"],
                "thought_tokens_per_s": w["thought_tokens_per_s"] / s["thought_tokens_per_s"],
                "peak_rss": s["peak_rss_mb"] / w["peak_rss_mb"],
            }
            x = ratios[engine]
            print(
                f"ratio {engine} / workbench: step time {x['step_time']:.2f}x, peak RSS {x['peak_rss']:.2f}x "
                f"(workbench thought tokens/s = {x['thought_tokens_per_s']:.2f}x {engine}'s)"
            )
    if "workbench" in summary and "workbench-rows" in summary:
        packed, rows = summary["workbench"]["median_loss_s"], summary["workbench-rows"]["median_loss_s"]
        ratios["loss_pass_rows_over_packed"] = rows / packed
        print(f"loss pass (median): packed {packed:.2f} s, one row per thought {rows:.2f} s = {rows / packed:.2f}x")
    for engine in (e for e in summary if e.startswith("trl")):
        share = summary[engine]["settings"]["retokenised_prompt_share"]
        print(f"{engine}: retokenised prompts {share:.1%} (TRL's prompt ids differ from the scored ids)")

    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "command": sys.argv,
                    "machine": cpu_model(),
                    "cores": os.cpu_count(),
                    "versions": vers,
                    "settings": vars(args),
                    "summary": summary,
                    "ratios": ratios,
                    "runs": runs,
                },
                indent=1,
            )
        )
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
