"""RLP: reinforcement as a pretraining objective, one step at a time (arXiv 2510.01265).

One step:
1. draw contexts: `docs_per_step` documents x `positions_per_doc` positions t (seeded by seed and step);
2. the EMA teacher scores every x_t without a thought (one forward pass per document);
3. the policy samples G thoughts per context and scores x_t after each (the reward engine of
   `workbench.engine.sampler`, on a bf16 inference copy of the current weights);
4. r = log p_theta(x_t | x_<t, c) - log p_phi(x_t | x_<t), detached; A = G/(G-1) (r - mean r);
5. clipped surrogate on the thought tokens, each thought averaged over its length, then over the batch;
6. optimizer step, then phi <- tau phi + (1 - tau) theta; the inference copies get the new weights.

Guards against the empty-thought collapse (see RLPConfig) act in 3 (sampling) and 4-5 (reward,
advantage, normalisation). Every step logs the diagnostics that show a collapse coming.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workbench.data import document_ref
from workbench.engine.backends import make_sampler
from workbench.engine.prefix_cache import encode_prefix
from workbench.engine.scorer import no_think_logp_at, no_think_scores
from workbench.engine.thought import ForwardCount, SamplingConfig, Thought, ThoughtTemplate
from workbench.errors import WorkbenchError
from workbench.metrics import thoughts_stats
from workbench.models import ModelHandle
from workbench.rewards import empty_thought_logp, record_rewards
from workbench.run_dirs import write_json
from workbench.thinking_corpus import style_stats, thought_style
from workbench.training.policy_logps import (
    TrainRow,
    can_pack,
    fed_tokens,
    packed_token_logps,
    token_logps,
    trainer_minus_sampler,
)
from workbench.training.rl_math import (
    clipped_surrogate,
    degenerate_groups,
    drift_by_group,
    ema_update_,
    guarded_advantages,
    kl_k3,
    normalise_loss,
    sampler_gap,
    shuffled_within_groups,
)
from workbench.training.rlp_config import RLPConfig
from workbench.training.trainer import Trainer

ROLLOUT_CONTEXT_TOKENS = 24  # tokens of context before each thought kept in rollouts.jsonl


def train_row(
    thought: Thought, open_ids: list[int], advantage: float, train_stop_tokens: bool, doc: int = -1
) -> TrainRow | None:
    """The policy's actions of one thought: its tokens, plus the tokens it sampled to end it (`Thought.stop_ids`).

    Only sampled tokens are trained: the canonical closing ids when the policy wrote them, the other tokens it
    spelled the marker with when it did so (their context is the one it sampled them in), or its EOS. A marker
    appended at the budget, or fed in place of a differently spelled one, was not sampled and is never trained."""
    prefix = thought.scored_ids[: thought.position] + open_ids
    targets = list(thought.ids)
    if train_stop_tokens:
        targets += list(thought.stop_ids)
    if not targets:
        return None
    seq = prefix + targets
    reported = thought.sampled_logps
    sampler = list(reported[: len(targets)]) if len(reported) == len(thought.ids) + len(thought.stop_ids) else None
    return TrainRow(
        inputs=seq[:-1], targets=targets, advantage=advantage, doc=doc, position=thought.position, sampler_logps=sampler
    )


def loss_chunks(rows: list[TrainRow], size: int, one_doc_each: bool) -> list[list[TrainRow]]:
    """Micro-batches of at most `size` rows; with `one_doc_each`, never two documents in one (a packed forward
    runs one document's prefix)."""
    if not one_doc_each:
        return [rows[i : i + size] for i in range(0, len(rows), size)]
    runs: list[list[TrainRow]] = []
    for row in rows:
        if runs and runs[-1][0].doc == row.doc:
            runs[-1].append(row)
        else:
            runs.append([row])
    return [run[i : i + size] for run in runs for i in range(0, len(run), size)]


@dataclass
class Context:
    doc: int  # index into the trainer's train_ids
    positions: list[int]


class RLPTrainer(Trainer):
    config: RLPConfig
    config_class = RLPConfig  # launch.trainer_for picks the trainer by its config's class

    @property
    def optimizer_steps_per_step(self) -> int:  # type: ignore[override]
        return self.config.ppo_epochs

    # -- state: the EMA teacher ------------------------------------------------------------------

    def setup(self) -> None:
        if self.config.train_positions == "marked" and not any(x.marked for x in self.train_ids):
            raise WorkbenchError(
                f"train_positions 'marked': no document of {self.config.train_data!r} has marked answers "
                '(a JSONL "answers" field; thinking:train has them)'
            )
        self._template = ThoughtTemplate(self.config.think_open, self.config.think_close)
        self.packed_loss = self.config.share_prefix_in_loss and can_pack(self.policy)
        if self.config.share_prefix_in_loss and not self.packed_loss and self.is_main:
            self._print(
                f"share_prefix_in_loss: {self.policy.config._attn_implementation} attention takes no custom mask; "
                "the loss pass feeds one row per thought"
            )
        self.open_ids = self._template.open_ids(self.tokenizer)
        self.close_ids = self._template.close_ids(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # phi: fp32, copied from theta at the first step ("lazy init") - here at construction, which
        # is the same weights - then an exponential moving average of theta. On an adapter (peft) theta = W0 + delta W
        # with W0 frozen, so the EMA of every weight is exact when kept for the adapted weights only.
        if self.config.peft:
            from workbench.adapters import adapted_weight_names

            tracked = adapted_weight_names(self.policy)
        else:
            tracked = None
        self.ema_names = [n for n, _ in self.policy_weights() if tracked is None or n in tracked]
        self.ema = [t.clone().float() for t in self.ema_sources()]
        self._teacher = self.inference_copy()
        from workbench.designs import FROZEN_REFERENCE_DESIGNS

        # a design that scores with a frozen reference (VR-CLI) gets the starting weights, kept for the whole run
        self._reference = self.inference_copy() if self.config.reward_design in FROZEN_REFERENCE_DESIGNS else None
        self.last_batch: dict[str, Any] = {}  # the last step's rewards and advantages (tests, rollout views)
        self._vllm = None  # the vLLM engine, with sampler_backend "vllm"
        self._probe_start: np.ndarray | None = None  # the engine's probe log-probs before the first update
        if self.config.sampler_backend == "vllm":
            from workbench.engine.vllm_backend import VLLMEngine
            from workbench.models import BUNDLED, bundled_model_dir

            model = self.config.model
            source = bundled_model_dir(model) if model in BUNDLED else model
            self._vllm = VLLMEngine(
                source,
                dtype=self.rollout_choice.name,
                seed=self.config.seed,
                max_model_len=self.config.vllm_max_model_len,
                gpu_memory_utilization=self.config.vllm_gpu_memory_utilization,
            )
            if self.is_main:
                self._print(f"vLLM engine started in {self._vllm.start_s:.1f} s")

    def refresh_rollout(self) -> None:
        """After every optimizer step: the bf16 inference copy and, with the vLLM backend, the engine get theta."""
        super().refresh_rollout()
        if self._vllm is not None:
            start = time.perf_counter()
            self._vllm.load_weights((n, p.to(self.rollout_dtype)) for n, p in self.named_policy_params())
            pushed = time.perf_counter() - start
            self.vllm_sync = {"time_vllm_push_s": pushed, **self.vllm_probe()}

    def vllm_probe(self, n_probe: int = 4) -> dict[str, float]:
        """Next-token log-probs on a fixed probe of training text, from the engine and from the rollout copy.

        vllm_sync_nats: largest |engine - policy|; stays at bf16 noise when the engine holds the policy's weights.
        vllm_shift_nats: largest |engine now - engine at the start|; grows as training moves the policy.
        """
        ids = self.train_ids[0][:64]
        cuts = sorted({max(2, len(ids) * (k + 1) // n_probe) for k in range(n_probe)})
        engine = np.array(self._vllm.last_token_logps([ids[:c] for c in cuts]))
        with torch.inference_mode():
            logits = self._rollout(torch.tensor([ids], device=self.accelerator.device)).logits[0].float()
            own = torch.log_softmax(logits, -1)
        local = np.array([float(own[c - 2, ids[c - 1]]) for c in cuts])
        self.compute.forward("probe", len(ids) + sum(cuts), len(ids) + len(cuts))
        if self._probe_start is None:
            self._probe_start = engine
        return {
            "vllm_sync_nats": float(np.abs(engine - local).max()),
            "vllm_shift_nats": float(np.abs(engine - self._probe_start).max()),
        }

    def ema_sources(self) -> list[torch.Tensor]:
        """theta's tensors that the EMA follows, in `ema_names` order."""
        if self.config.peft:
            weights = dict(self.policy_weights())
            return [weights[n] for n in self.ema_names]
        return [t for _, t in self.named_policy_params()]

    def teacher_drift(self) -> dict[str, float]:
        """||theta - phi|| / ||theta|| over every weight ("all"; with an adapter the frozen ones add to ||theta|| only)
        and per module group (embedding, attention, mlp, norm): which part of the model RL moves."""
        weights = self.policy_weights()
        phi = dict(zip(self.ema_names, self.ema))
        return drift_by_group([phi.get(n, t) for n, t in weights], weights)

    def refresh_teacher(self) -> None:
        with torch.no_grad():
            if self.config.peft:  # the teacher is a plain model: its adapted weights by name, the rest stay W0
                params = dict(self._teacher.named_parameters())
                for name, src in zip(self.ema_names, self.ema):
                    params[name].copy_(src)
                return
            for dst, src in zip(self._teacher.parameters(), self.ema):
                dst.copy_(src)

    @property
    def teacher(self) -> ModelHandle:
        return ModelHandle(
            self._teacher, self.tokenizer, self.model_name, source=str(self.run_dir), role="teacher", step=self.step
        )

    def extra_tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        # with an adapter: the adapted weights' EMA only (the rest of phi is the base model's)
        return {"teacher": dict(zip(self.ema_names, self.ema))}

    def load_extra_tensors(self, tensors: dict[str, dict[str, torch.Tensor]]) -> None:
        saved = tensors["teacher"]
        missing = [n for n in self.ema_names if n not in saved]
        if missing:
            raise WorkbenchError(f"the checkpoint's teacher lacks {len(missing)} weight(s), e.g. {missing[0]!r}")
        self.ema = [saved[n].to(self.accelerator.device).float() for n in self.ema_names]
        self.refresh_teacher()

    # -- one step --------------------------------------------------------------------------------

    def sampling(self, seed: int, G: int | None = None) -> SamplingConfig:
        cfg = self.config
        return SamplingConfig(
            G=G or cfg.G,
            thought_tokens=cfg.thought_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=seed,
            allow_eos=cfg.allow_eos_in_thought,
            min_thought_tokens=cfg.min_thought_tokens,
        )

    def draw_contexts(self, rng: np.random.Generator) -> list[Context]:
        cfg = self.config
        docs = rng.choice(len(self.train_ids), size=min(cfg.docs_per_step, len(self.train_ids)), replace=False)
        contexts = []
        for d in sorted(int(i) for i in docs):
            n = len(self.train_ids[d])
            if cfg.train_positions == "marked":  # the document's answer tokens (the thinking corpus)
                pool = np.array([t for t in self.train_ids[d].marked if t >= cfg.min_position])
            else:
                pool = np.arange(min(cfg.min_position, n - 1), n)
            if not len(pool):
                continue
            k = min(cfg.positions_per_doc, len(pool))
            contexts.append(Context(d, sorted(int(t) for t in rng.choice(pool, size=k, replace=False))))
        return contexts

    def rollouts(self, contexts: list[Context], seed: int) -> dict[str, Any]:
        """Thoughts, their rewards (`reward_design`), the teacher's no-think scores and the empty-thought reference for
        every context; every forward goes into the step's compute count."""
        cfg = self.config
        policy, teacher = self.rollout, self.teacher
        on_vllm = {"backend": "vllm", "engine": self._vllm} if self._vllm is not None else {}
        sampler = make_sampler(policy, self._template, self.sampling(seed), **on_vllm)
        by_design = cfg.reward_design != "rlp" or bool(cfg.design_options)  # plain RLP: the sampling pass has it all
        thoughts: list[list[Thought]] = []  # per (doc, position): G thoughts
        teacher_logp, empty_logp, design_rewards = [], [], []
        count = ForwardCount()
        for ctx in contexts:
            ids = self.train_ids[ctx.doc]
            span = max(ctx.positions)
            if by_design:  # designs read the whole document's no-think pass (look-ahead, entropies)
                no_think, _ = no_think_scores(teacher, ids)
                self.compute.forward("teacher", len(ids), len(ids) - 1)
                teacher_at = no_think.logp[ctx.positions]
            else:
                teacher_at = no_think_logp_at(teacher, ids, ctx.positions)
                self.compute.forward("teacher", span, len(ctx.positions))
            _, prefix = encode_prefix(policy.model, ids[:span], span)
            self.compute.forward("sample", span, 0)
            sampled = sampler.sample(ids, ctx.positions, prefix=prefix)
            self.compute.add_count("sample", sampler.compute)  # the decode loop (it also scores x_t) or vLLM
            empty = empty_thought_logp(policy, ids, ctx.positions, self._template, prefix=prefix, count=count)
            self.compute.add_count("score", count)
            if by_design:
                design_rewards.extend(self.design_rewards(ids, ctx.positions, sampled, no_think, empty, seed))
            for j in range(len(ctx.positions)):
                thoughts.append(sampled[j * cfg.G : (j + 1) * cfg.G])
                teacher_logp.append(teacher_at[j])
                empty_logp.append(empty[j])
        return {
            "thoughts": thoughts,
            "teacher_logp": np.array(teacher_logp),
            "empty_logp": np.array(empty_logp),
            "design_rewards": np.array(design_rewards) if by_design else None,
        }

    def design_rewards(
        self, ids: list[int], positions: list[int], sampled: list[Thought], no_think, empty, seed: int
    ) -> list[float]:
        """One document's rewards under `reward_design` (any registered design), on the thoughts just sampled; a design
        that generates after the thoughts (rpt, pretrainzero, rlpt) samples with the step's seed."""
        from workbench.designs import DESIGNS, DesignInput

        cfg = self.config
        policy, teacher = self.rollout, self.teacher
        rm = record_rewards(
            policy,
            teacher,
            self._template,
            self.sampling(seed),
            "train",
            ids,
            no_think,
            list(positions),
            sampled,
            {},
            dict(zip(positions, np.asarray(empty).tolist())),
            "sampled",
        )
        reference = None
        if self._reference is not None:
            reference = ModelHandle(
                self._reference, self.tokenizer, self.model_name, source=str(self.run_dir), role="reference", step=0
            )
        inp = DesignInput(policy, teacher, rm, reference=reference)
        out = DESIGNS[cfg.reward_design](inp, **cfg.design_options)
        self.compute.add_count("design", inp.count)
        return np.asarray(out.rewards, dtype=float).tolist()

    def before_first_step(self) -> None:
        """`style_margin_check`: refuse to spend RL compute where the model's own scratchpads do not out-earn its
        restatements by more than 2 SE (the margin goes to train.log and run.json either way)."""
        n = self.config.style_margin_check
        if not n:
            return
        from workbench.data import load_documents_spec
        from workbench.thinking_ready import own_thoughts, style_margin

        docs = [d for d in load_documents_spec(self.config.eval_data) if d.answers][:n]
        if not docs:
            raise WorkbenchError(f"style_margin_check: eval_data {self.config.eval_data!r} has no marked answers")
        own = own_thoughts(
            self.rollout, docs, G=4, thought_tokens=self.config.eval_thought_tokens, seed=self.config.seed
        )
        m = style_margin(own)
        said = (
            f"style margin at {len(docs)} held-out worksheets: E[r | scratch] - E[r | restate] = {m['margin']:+.2f} "
            f"± {m['se']:.2f} nats ({int(m['n_scratch'])} scratchpads, {int(m['n_restate'])} restatements)"
        )
        self.note(said)
        if self.is_main:
            info = json.loads((self.run_dir / "run.json").read_text())
            info["style_margin"] = m
            write_json(self.run_dir / "run.json", info)
        if not m["margin"] > 2 * m["se"]:  # NaN (too few of either style) refuses too
            raise WorkbenchError(
                f"{said}: not above 2 SE, so RLP would push this model towards restatements. Train a warm start whose "
                "own scratchpads are right more often, or set style_margin_check: 0 to train anyway"
            )

    def train_step(self, step: int) -> dict[str, Any]:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, step, self.accelerator.process_index])
        contexts = self.draw_contexts(rng)
        t0 = time.perf_counter()
        roll = self.rollouts(contexts, seed=int(rng.integers(2**31 - 1)))
        time_sample = time.perf_counter() - t0

        groups: list[list[Thought]] = roll["thoughts"]
        logp_with = torch.tensor([[th.logp_with_thought for th in g] for g in groups], dtype=torch.float64)
        info_gain = logp_with - torch.tensor(roll["teacher_logp"])[:, None]  # RLP's reward, detached: plain numbers
        if roll["design_rewards"] is None:
            rewards = info_gain
        else:
            rewards = torch.tensor(roll["design_rewards"], dtype=torch.float64).reshape(len(groups), cfg.G)
        empty = torch.tensor([[th.length == 0 for th in g] for g in groups])
        adv = guarded_advantages(rewards, empty, cfg.empty_thought_penalty, cfg.empty_advantage_cap)
        if cfg.control == "shuffled_advantages":  # the null control: same values per group, assigned at random
            adv = shuffled_within_groups(adv, torch.Generator().manual_seed(int(rng.integers(2**31 - 1))))
        self.last_batch = {
            "contexts": contexts,
            "thoughts": groups,
            "teacher_logp": roll["teacher_logp"],
            "empty_logp": roll["empty_logp"],
            "rewards": rewards,
            "info_gain": info_gain,
            "advantages": adv,
        }

        docs = [ctx.doc for ctx in contexts for _ in ctx.positions]  # one per group, as rollouts orders them
        rows = [
            row
            for g, a, doc in zip(groups, adv, docs)
            for th, ai in zip(g, a.tolist())
            if (row := train_row(th, self.open_ids, ai, cfg.train_stop_tokens, doc)) is not None
        ]
        n_thoughts = sum(len(g) for g in groups)
        denominator = n_thoughts if cfg.loss_normalisation == "sequence" else max(1, sum(len(r.targets) for r in rows))

        t1 = time.perf_counter()
        stats = self.update(rows, contexts, denominator)
        time_loss = time.perf_counter() - t1
        train_tokens = sum(len(r.inputs) for r in rows)  # as if each thought carried its own context

        all_thoughts = [th for g in groups for th in g]
        lengths = np.array([th.length for th in all_thoughts])
        empty_reward = roll["empty_logp"] - roll["teacher_logp"]
        markers = len(self.open_ids) + len(self.close_ids)
        # the paper's token budget (its appendix): T_flop = rollouts x their sequence length + the input tokens
        tokens_rollout = sum(th.position + markers + th.length for th in all_thoughts)
        tokens_input = sum(t for ctx in contexts for t in ctx.positions)
        total = time.perf_counter() - t0
        row = {
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            "reward_max": float(rewards.max()),
            "share_positive": float((rewards > 0).double().mean()),
            "info_gain_mean": float(info_gain.mean()),
            "empty_thought_reward": float(empty_reward.mean()),
            "advantage_std": float(adv.std()),
            "degenerate_group_share": float(degenerate_groups(rewards).double().mean()),
            **stats,
            **thoughts_stats(all_thoughts),
            **{("teacher_drift" if g == "all" else f"teacher_drift_{g}"): v for g, v in self.teacher_drift().items()},
            "contexts": len(groups),
            "thoughts": n_thoughts,
            "time_sample_s": time_sample,
            "time_loss_s": time_loss,
            "thought_tokens_per_s": float(lengths.sum()) / total,
            "train_tokens_per_s": train_tokens / total,
            "tokens_rollout": tokens_rollout,
            "tokens_input": tokens_input,
            "budget_tokens_step": tokens_rollout + tokens_input,
            **self.compute.step_metrics(),
        }
        if cfg.train_positions == "marked":  # at answers: what each style of thought earned, and how it ended
            row.update(
                style_stats(
                    [th.text for th in all_thoughts], rewards.flatten().tolist(), [th.closed_by for th in all_thoughts]
                )
            )
        if self._vllm is not None:
            # the weights this step sampled with were pushed after the previous optimizer step
            row.update(self.vllm_sync)
        if row["share_empty"] >= cfg.collapse_warning:
            self.note(
                f"step {step}: {row['share_empty']:.0%} of thoughts are empty (mean length {row['thought_tokens_mean']:.1f}) - "
                "the empty-thought collapse; see the guards in RLPConfig (loss_normalisation, min_thought_tokens, ...)"
            )
        return row

    def rollout_records(self, step: int) -> list[dict[str, Any]]:
        """Every thought of the last step, for rollouts.jsonl and the trackers' table: where it was sampled (document,
        position, the context's last tokens, the true next token), what it says, what it earned and how it ended."""
        batch = self.last_batch
        if not batch:
            return []
        tok = self.tokenizer
        docs = [ctx.doc for ctx in batch["contexts"] for _ in ctx.positions]  # one per group, as rollouts orders them
        records = []
        for g, (group, doc) in enumerate(zip(batch["thoughts"], docs)):
            ids = self.train_ids[doc]
            for th, reward, gain, adv in zip(
                group, batch["rewards"][g].tolist(), batch["info_gain"][g].tolist(), batch["advantages"][g].tolist()
            ):
                t = th.position
                records.append(
                    {
                        "step": step,
                        "doc": document_ref(self.config.train_data, getattr(ids, "doc_id", str(doc))),
                        "position": t,
                        "context_tail": tok.decode(ids[max(0, t - ROLLOUT_CONTEXT_TOKENS) : t]),
                        "target": tok.decode([ids[t]]),
                        "index": th.index,
                        "thought": th.text,
                        "thought_ids": list(th.ids),
                        "reward": reward,
                        "info_gain": gain,
                        # over the empty thought: what the thought's words add beyond the markers
                        "content_gain": float(th.logp_with_thought - batch["empty_logp"][g]),
                        "advantage": adv,
                        "length": th.length,
                        "closed_by": th.closed_by,
                        "style": thought_style(th.text),
                        "family": getattr(ids, "families", {}).get(t, ""),  # at a thinking corpus's answers
                        # the sampler's log p of each thought token (then its stop tokens), at the temperature
                        "sampled_logps": [round(x, 4) for x in th.sampled_logps],
                    }
                )
        return records

    def update(self, rows: list[TrainRow], contexts: list[Context], denominator: float) -> dict[str, float]:
        """ppo_epochs optimizer steps on one batch of thoughts; the EMA teacher follows every step."""
        cfg = self.config
        micro = loss_chunks(rows, cfg.micro_batch_rows, self.packed_loss)
        old: list[torch.Tensor] = []
        self._gaps: list[torch.Tensor] = []  # trainer minus sampler log p per target token, filled by the first epoch
        losses, clipped, tokens, kls, norms = 0.0, 0.0, 0.0, 0.0, []
        for epoch in range(cfg.ppo_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for i, chunk in enumerate(micro):
                # several processes (DDP): all-reduce gradients once per optimizer step, on the last backward
                last = i == len(micro) - 1 and cfg.ntp_coef == 0
                with nullcontext() if last else self.accelerator.no_sync(self.model):
                    stats = self._micro_step(chunk, old, i, epoch, denominator)
                losses += stats[0]
                clipped += stats[1]
                tokens += stats[2]
                kls += stats[3]
            if cfg.ntp_coef > 0:
                losses += self.ntp_loss_backward(contexts)
            if cfg.max_grad_norm > 0:
                norms.append(float(self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)))
            else:
                norms.append(
                    float(
                        torch.norm(torch.stack([p.grad.norm() for p in self.model.parameters() if p.grad is not None]))
                    )
                )
            self.optimizer_step()
            ema_update_(self.ema, self.ema_sources(), cfg.ema_tau)
        self.refresh_teacher()
        return {
            **sampler_gap(torch.cat(self._gaps) if self._gaps else torch.zeros(0)),
            "loss": losses / cfg.ppo_epochs,
            "clip_fraction": clipped / max(tokens, 1.0),
            "kl": kls / max(tokens, 1.0),
            "grad_norm": float(np.mean(norms)),
            "train_target_tokens": tokens / cfg.ppo_epochs,
            "loss_tokens_fed": sum(fed_tokens(chunk, self.packed_loss) for chunk in micro),  # per epoch
        }

    def _micro_step(
        self, chunk: list[TrainRow], old: list[torch.Tensor], i: int, epoch: int, denominator: float
    ) -> tuple[float, float, float, float]:
        """Forward + backward of one chunk of rows; returns (loss, clipped tokens, tokens, kl sum)."""
        cfg = self.config
        logp, mask = self.thought_logps(self.model, chunk)
        if self.packed_loss:  # each document's prefix once, the LM head at the targets only
            fed, scored = fed_tokens(chunk, True), sum(len(r.targets) for r in chunk)
        else:  # left-padded rows: padding is computed, and the head runs on the last K columns of every row
            fed = len(chunk) * max(len(r.inputs) for r in chunk)
            scored = len(chunk) * max(len(r.targets) for r in chunk)
        self.compute.train("loss", fed, scored)
        if epoch == 0:
            old.append(logp.detach())  # the sampling policy's log-probs: same weights, so the ratio starts at 1
            self._gaps.append(trainer_minus_sampler(logp.detach(), mask, chunk))
        adv = torch.tensor([r.advantage for r in chunk], device=logp.device, dtype=logp.dtype)[:, None]
        per_token, was_clipped = clipped_surrogate(logp, old[i], adv.expand_as(logp), cfg.eps_low, cfg.eps_high)
        kl_sum = 0.0
        if cfg.beta > 0:
            with torch.no_grad():
                ref, _ = self.thought_logps(self._teacher, chunk)
            self.compute.forward("loss", fed, scored)
            kl = kl_k3(logp, ref.to(logp.dtype))
            per_token = per_token + cfg.beta * kl
            kl_sum = float((kl.detach() * mask).sum())
        loss = normalise_loss(per_token, mask, cfg.loss_normalisation, denominator)
        self.accelerator.backward(loss)
        return float(loss.detach()), float((was_clipped & mask).sum()), float(mask.sum()), kl_sum

    def thought_logps(self, model: torch.nn.Module, chunk: list[TrainRow]) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(thought tokens | context) of one chunk; packed (each document's prefix once) when configured."""
        if self.packed_loss:
            base = self.policy if model is self.model else model
            return packed_token_logps(model, chunk, self.config.temperature, base=base)
        return token_logps(model, chunk, self.config.temperature, self.pad_id)

    def ntp_loss_backward(self, contexts: list[Context]) -> float:
        """The optional next-token term on the step's documents (an ablation; the paper uses none)."""
        total = 0.0
        for ctx in contexts:
            ids = torch.tensor([self.train_ids[ctx.doc]], device=self.accelerator.device)
            out = self.model(input_ids=ids, labels=ids, use_cache=False)
            loss = self.config.ntp_coef * out.loss / len(contexts)
            self.accelerator.backward(loss)
            total += float(loss.detach())
            self.compute.train("loss", ids.shape[1], ids.shape[1])
        return total

    def postfix(self, row: dict[str, Any]) -> dict[str, str]:
        return {
            "reward": f"{row['reward_mean']:.2f}",
            "len": f"{row['thought_tokens_mean']:.1f}",
            "empty": f"{row['share_empty']:.0%}",
        }
