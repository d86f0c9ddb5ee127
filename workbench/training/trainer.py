"""The loop every trainer shares, on accelerate: run directory, model, optimizer, checkpoints, resume, eval.

A subclass writes one `train_step(step) -> metrics`; everything else lives here:

    run_dir/
      config.yaml        the resolved config (every field)
      run.json           seed, versions, command, start time, config fingerprint
      metrics.jsonl      one JSON object per step (step 0: the eval before training)
      train.log          warnings and milestones
      rollouts.jsonl     every sampled thought of every step, capped by rollouts_max_mb (RLP)
      tracking/          the trackers' files when report_to names a file-based one (tensorboard, trackio)
      checkpoints/step-NNNNNN/   policy.safetensors, teacher.safetensors, optimizer.pt, ...
      summary.json       written at the end
      STOP               create this file to stop after the current step (the notebook's stop button)

Reproducibility: all randomness of step s comes from generators seeded with (seed, s, process), so
a resumed run draws exactly the contexts and thoughts the uninterrupted run drew.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench import work
from workbench.data import MIN_DOC_TOKENS, Document, load_documents_spec, tokenize_documents
from workbench.errors import WorkbenchError
from workbench.evaluation import EvalSettings, eval_settings, evaluate, evaluation_documents, film_frame
from workbench.hardware import auto_mixed_precision, choose_dtype
from workbench.metrics import renamed
from workbench.models import ModelHandle, check_loaded, load_model
from workbench.run_dirs import new_run_dir, read_jsonl_rows, runs_root, versions, write_json
from workbench.training.checkpoints import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    usable_checkpoint,
)
from workbench.training.config import NOT_IN_FINGERPRINT, TrainConfig
from workbench.training.configs import load_config
from workbench.training.flops import ComputeMeter, flop_counter
from workbench.training.monitor import RewardHackingMonitor
from workbench.training.sharding import (
    full_named_tensors,
    full_optimizer_state,
    full_state_dict,
    is_sharded,
    load_full_optimizer_state,
    load_full_state_dict,
    plain_copy,
)
from workbench.training.tracking import RolloutLog, Trackers, tracker_names
from workbench.training.warm_start_cache import cached_model_path

TIMING_KEYS = frozenset(
    {
        "step_time_s",
        "time_sample_s",
        "time_loss_s",
        "time_eval_s",
        "thought_tokens_per_s",
        "train_tokens_per_s",
        "tokens_per_s",
        "peak_rss_mb",
        "peak_gpu_mb",
        "wall_time_s",
    }
)  # everything else in metrics.jsonl is reproducible bit for bit


SUMMED_KEYS = frozenset(
    {
        "contexts",
        "thoughts",
        "thought_tokens_per_s",
        "train_tokens_per_s",
        "tokens_per_s",
        "train_target_tokens",
        "train_tokens",
        "loss_tokens_fed",
        "budget_tokens_step",
        "tokens_rollout",
        "tokens_input",
    }
)  # across processes: totals
SUMMED_PREFIXES = ("flops_", "fwd_tokens_", "head_rows_")  # the compute counts of every process add up


# fields a resumed run may change: none of them changes a step already trained (max_steps only with a learning-rate
# schedule that does not depend on it); the tracking fields (NOT_IN_FINGERPRINT) may change as well
EXTENDABLE = ("max_steps", "eval_every", "checkpoint_every", "keep_last")
STEP_FREE_SCHEDULES = ("constant", "constant_with_warmup")


def merge_process_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One metrics row from every process's row of a step (processes see different contexts).

    Counts and throughputs are summed, `*_max` and peak memory take the largest, every other number is the mean over
    processes (the step's mean when processes hold equal numbers of contexts, as they do here; a `*_std` is the mean
    of the processes' standard deviations). Anything that is not a number is the main process's."""
    if len(rows) == 1:
        return dict(rows[0])
    merged = dict(rows[0])
    for key, value in rows[0].items():
        values = [r.get(key) for r in rows]
        if isinstance(value, bool) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        if key in SUMMED_KEYS or key.startswith(SUMMED_PREFIXES):
            merged[key] = sum(values)
        elif key.endswith("_max") or key.startswith("peak_"):
            merged[key] = max(values)
        else:
            merged[key] = float(np.mean(values))
    return merged


load_docs = load_documents_spec  # the old name


def peak_memory_mb() -> dict[str, float]:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _release_accelerator_state(mixed_precision: str) -> None:
    """Let a second run in the same process (a notebook kernel, a test session) choose its own mixed precision.

    accelerate keeps one process-wide AcceleratorState and refuses a new Accelerator whose precision differs from the
    first one's. In a single process nothing else holds that state, so it is dropped and rebuilt; under a distributed
    launch the state belongs to the launcher and is left alone."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    state = AcceleratorState._shared_state
    if not state or state.get("_mixed_precision", mixed_precision) == mixed_precision:
        return
    if PartialState().distributed_type != DistributedType.NO:
        return
    AcceleratorState._reset_state(reset_partial_state=True)


class Trainer:
    """Owns the state of a run; `train()` runs it to the end (or to a STOP file)."""

    def __init__(
        self, config: TrainConfig, resume: bool | str = False, log: Callable[[str], None] | None = None
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import broadcast_object_list

        self.config = config.validate()
        if config.threads:
            torch.set_num_threads(config.threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"  # what the Accelerator below runs on
        self.mixed_precision, mp_reason = (
            auto_mixed_precision(device) if config.mixed_precision == "auto" else (config.mixed_precision, "requested")
        )
        _release_accelerator_state(self.mixed_precision)
        self.accelerator = Accelerator(
            mixed_precision=self.mixed_precision,
            step_scheduler_with_optimizer=False,
            # without a GPU say so: accelerate then treats torchrun's processes as MULTI_CPU (gloo)
            cpu=not torch.cuda.is_available(),
        )
        self.is_main = self.accelerator.is_main_process
        self._print = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

        # -- run directory: chosen on the main process, shared with the others
        self.monitor = RewardHackingMonitor(config.hacking_patience) if config.hacking_patience > 0 else None
        self._extension: dict[str, list[Any]] = {}  # fields a resumed run changed (EXTENDABLE): {name: [old, new]}
        run_dir = [str(self._resolve_run_dir(resume)) if self.is_main else None]
        broadcast_object_list(run_dir)
        self.run_dir = Path(run_dir[0])

        # -- data
        self.train_docs = load_docs(config.train_data)
        self.eval_settings: EvalSettings = eval_settings(config)  # the one evaluation: from shared fields only

        # -- model (fp32 master weights), optimizer, schedule
        # warm:BASE -> the cached warm start (launch.trainer_for trains it first when it is missing)
        self.model_path = cached_model_path(config.model)
        handle = load_model(
            self.model_path,
            dtype="float32",
            device=str(self.accelerator.device),
            trust_remote_code=config.trust_remote_code,
        )
        self.tokenizer = handle.tokenizer
        self.model_name = handle.name
        model = handle.model
        with torch.no_grad():
            # transformers maps an fp32 safetensors file copy-on-write: the weights stay file pages until the first
            # optimizer step writes them, page fault by page fault (5 s of the first RLP step on 2 AVX2 cores). One
            # copy into owned memory costs 0.3 s.
            for param in model.parameters():
                param.data = param.data.clone()
        model.requires_grad_(True)
        self.freeze(model)
        if config.peft:
            from workbench.adapters import with_adapter

            torch.manual_seed(config.seed)  # the adapters' initial A matrices: same seed, same run
            model = with_adapter(model, config.peft)  # only the LoRA matrices train
        model.train()
        if self.accelerator.num_processes == 1 and not config.peft and config.train_embeddings:
            # a batch reads a few hundred rows of the 262k-row embedding: its gradient as a sparse tensor is added
            # into the (dense, tied) LM-head gradient in place, instead of a zero-filled 671 MB tensor per backward
            model.get_input_embeddings().sparse = True
        self.flops_of = flop_counter(model)
        self.compute = ComputeMeter(self.flops_of)  # every forward of a step, by kind (workbench/training/flops.py)
        self.train_ids = self.training_ids(self.train_docs)
        # the held-out documents exactly as the one evaluation reads them (notebook 05 and the arena read them so too)
        self.eval_ids = evaluation_documents(self.tokenizer, self.eval_settings) if config.eval_data else []
        if config.eval_data and not self.eval_ids:
            raise WorkbenchError(f"eval_data: no document has at least {MIN_DOC_TOKENS} tokens")
        # one process: the fused AdamW kernel, one pass over weights, moments and gradients instead of ~10 foreach
        # passes (on Gemma 3 270M, whose 262k x 640 embedding is two thirds of the weights, the foreach step took 3.6 s
        # of a 21 s RLP step on 2 AVX2 cores). Several processes keep the plain one, so DDP and FSDP2 step alike.
        fused = self.accelerator.num_processes == 1 and self.accelerator.device.type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad] if config.peft else model.parameters(),
            lr=config.learning_rate,
            betas=tuple(config.adam_betas),
            weight_decay=config.weight_decay,
            fused=fused or None,
        )
        from transformers import get_scheduler

        self.stop_budget = self.compute_budget()  # (quantity, amount) the run stops at, or None
        self.schedule_steps = self.expected_steps()
        scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=max(1, self.schedule_steps * self.optimizer_steps_per_step),
            scheduler_specific_kwargs={"min_lr": config.min_learning_rate}
            if config.lr_scheduler == "cosine_with_min_lr"
            else None,
        )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.rollout_choice = choose_dtype(config.rollout_dtype, self.accelerator.device)
        self.rollout_dtype = self.rollout_choice.dtype
        self.hardware = {
            **self.rollout_choice.as_dict(),
            "rollout_dtype": self.rollout_choice.name,
            "mixed_precision": self.mixed_precision,
            "mixed_precision_reason": mp_reason,
        }
        self._rollout: torch.nn.Module | None = None
        self._gathered: list[tuple[str, torch.Tensor]] | None = None  # see named_policy_params
        self.step = 0
        self._saved_step = -1
        self.flops = 0.0  # training FLOPs so far, every process
        self.budget_tokens = 0  # tokens counted toward the paper's token budget so far (see budget_tokens_step)
        self.setup()
        self.rollout_log = RolloutLog(
            self.run_dir / "rollouts.jsonl", config.rollouts_max_mb if self.is_main else 0, note=self.note
        )
        if resume and (ckpt := self._resume_checkpoint()) is not None:
            self._restore(ckpt)
            if self._extension and self.is_main:
                self._record_extension()
        elif self.is_main:
            self._start_files()
        self.trackers = Trackers(
            tracker_names(config.report_to) if self.is_main else [],
            config.run_name,
            self.run_dir,
            config.to_dict(),
            note=self.note,
        )
        self.refresh_rollout()
        self.release_gathered()
        if is_sharded(self.policy):
            self.note(f"policy sharded with FSDP2 across {self.accelerator.num_processes} processes")

    # -- hooks for subclasses ------------------------------------------------------------------------

    optimizer_steps_per_step = 1

    def setup(self) -> None:
        """Build trainer-specific state (e.g. the EMA teacher) after the model is prepared."""

    def rollout_records(self, step: int) -> list[dict[str, Any]]:
        """The thoughts the step sampled, one dict each, for rollouts.jsonl and the trackers (RLP has them)."""
        return []

    def train_step(self, step: int) -> dict[str, Any]:
        raise NotImplementedError

    def freeze(self, model: torch.nn.Module) -> None:
        """Turn off gradients of parameters the run keeps fixed (before the optimizer is built): with
        `train_embeddings: false` the token embedding and the LM head (tied or not)."""
        if not self.config.train_embeddings:
            model.get_input_embeddings().requires_grad_(False)
            model.get_output_embeddings().requires_grad_(False)

    def extra_tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        return {}

    def load_extra_tensors(self, tensors: dict[str, dict[str, torch.Tensor]]) -> None:
        pass

    def compute_budget(self) -> tuple[str, float] | None:
        """('flops' | 'tokens', amount) at which the run stops early, or None (the NTP trainer also matches a run)."""
        return ("flops", float(self.config.flops_budget)) if self.config.flops_budget else None

    def expected_steps(self) -> int:
        """Steps the LR schedule spans: max_steps (a trainer that stops at a budget estimates its steps)."""
        return self.config.max_steps

    def finished(self) -> bool:
        """Stop early: the compute budget is spent."""
        if self.stop_budget is None:
            return False
        quantity, amount = self.stop_budget
        return (self.flops if quantity == "flops" else self.budget_tokens) >= amount

    def progress(self) -> tuple[float, float, str]:
        """(done, total, unit) for the progress bar: steps, or the budget when the run stops at one."""
        if self.stop_budget is None:
            return self.step, self.config.max_steps, "step"
        quantity, amount = self.stop_budget
        done = self.flops if quantity == "flops" else self.budget_tokens
        return min(done, amount), amount, "FLOP" if quantity == "flops" else "tok"

    # -- models ----------------------------------------------------------------------------------------

    @property
    def policy(self) -> torch.nn.Module:
        """The trainable model, unwrapped from DDP/FSDP wrappers."""
        return self.accelerator.unwrap_model(self.model)

    def named_policy_params(self) -> list[tuple[str, torch.Tensor]]:
        """(name, whole tensor) of the policy's parameters, detached.

        Under FSDP2 this gathers the shards (a collective: every process calls it) once per optimizer step: the EMA
        update, the teacher drift, the rollout refresh and the vLLM push all read the same gathered tensors, which
        `optimizer_step` marks stale and the loop frees after `refresh_rollout`, their last reader. Unsharded, the
        tensors are the parameters themselves, so the cache is never stale and costs nothing."""
        if self._gathered is None:
            self._gathered = full_named_tensors(self.policy)
        return self._gathered

    def policy_weights(self) -> list[tuple[str, torch.Tensor]]:
        """theta as a plain model names it: the parameters (`named_policy_params`), or with `peft` each adapted weight
        with its adapter merged (W0 + scaling * B A, a fresh tensor) and the frozen ones as they are."""
        if not self.config.peft:
            return self.named_policy_params()
        from workbench.adapters import merged_named_tensors

        return merged_named_tensors(self.policy)

    def optimizer_step(self) -> None:
        """optimizer, scheduler, zero_grad: where a training step changes the policy's weights."""
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.release_gathered()  # stale now

    def inference_copy(self) -> torch.nn.Module:
        """A frozen, unsharded copy of the policy in the rollout dtype (thought sampling and scoring run on it)."""
        policy = self.policy
        if self.config.peft:
            from workbench.adapters import merged_copy

            return merged_copy(policy, self.rollout_dtype)
        return plain_copy(policy, self.rollout_dtype, self.named_policy_params() if is_sharded(policy) else None)

    def refresh_rollout(self) -> None:
        """Push the current policy weights into the inference copy (after every optimizer step). With adapters the
        copy is the base with the adapter merged in: dropped here, rebuilt when a reader asks for it (`rollout`)."""
        if self.config.peft:
            self._rollout = None
            return
        if self._rollout is None:
            self._rollout = self.inference_copy()
            return
        with torch.no_grad():
            for dst, (_, src) in zip(self._rollout.parameters(), self.named_policy_params()):
                dst.copy_(src)

    def release_gathered(self) -> None:
        """Free the gathered whole weights (under FSDP2, 4 bytes a parameter) until the next optimizer step."""
        self._gathered = None

    @property
    def rollout(self) -> ModelHandle:
        if self._rollout is None:
            self._rollout = self.inference_copy()
        return ModelHandle(
            self._rollout, self.tokenizer, self.model_name, source=str(self.run_dir), role="policy", step=self.step
        )

    # -- the loop ------------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        start_time = time.perf_counter()
        flops_before = self.flops  # a resumed run counts only the steps this process trains
        try:
            return self._train_loop(start_time)
        finally:
            work.add_training_run(self.flops - flops_before)
            self.trackers.finish()  # flushes TensorBoard's event file even when a step raised

    def before_first_step(self) -> None:
        """A check a trainer runs once before its first step (not on resume); it raises to refuse the run."""

    def _train_loop(self, start_time: float) -> dict[str, Any]:
        cfg = self.config
        if self.step == 0:
            self.before_first_step()
        if self.step == 0 and cfg.eval_at_start:
            row = {"step": 0, "flops": 0.0, "budget_tokens": 0, **(self.matched_start_evaluation() or self.evaluate())}
            self.watch(row)
            self.log_row(row)
        bar = None
        if cfg.progress and self.is_main:
            from tqdm.auto import tqdm

            done, total, unit = self.progress()
            bar = tqdm(total=total, initial=done, desc=cfg.run_name, unit=unit, unit_scale=unit != "step")
        stopped_by = "max_steps"
        while self.step < cfg.max_steps:
            if self.stop_requested():
                stopped_by = "stop file"
                break
            if self.finished():
                stopped_by = "flops budget"
                break
            step = self.step + 1
            torch.manual_seed(cfg.seed * 100_003 + step)  # anything else random in the step (e.g. dropout)
            t0 = time.perf_counter()
            with work.paused():  # a step counts its own work, forward and backward (ComputeMeter), not the meter's way
                row = self.train_step(step)
            if self.accelerator.num_processes > 1:
                from accelerate.utils import gather_object

                row = merge_process_rows(gather_object([row]))
            self.step = step
            self.refresh_rollout()
            self.release_gathered()
            self.flops += float(row.get("flops_step", 0.0))
            self.budget_tokens += int(row.get("budget_tokens_step", 0))
            row = {
                "step": step,
                **row,
                "flops": self.flops,
                "budget_tokens": self.budget_tokens,
                "lr": float(self.scheduler.get_last_lr()[0]),
            }
            row["step_time_s"] = time.perf_counter() - t0
            last = step == cfg.max_steps or self.stop_requested() or self.finished()
            if step % cfg.eval_every == 0 or last:
                row.update(self.evaluate())
                self.watch(row)
            row.update(peak_memory_mb())
            self.log_row(row)
            if self.is_main:
                records = self.rollout_records(step)
                self.rollout_log.append(records)
                self.trackers.log_thoughts(records[: cfg.rollout_table_rows], step)
            if step % cfg.checkpoint_every == 0 or last:
                self.save()
            if bar is not None:
                bar.update(self.progress()[0] - bar.n)
                bar.set_postfix(self.postfix(row))
        if bar is not None:
            bar.close()
        if self.step and self._saved_step != self.step:
            self.save()
        summary = self.summary(stopped_by, time.perf_counter() - start_time)
        if self.is_main:
            write_json(self.run_dir / "summary.json", summary)
            self.note(f"finished at step {self.step} ({stopped_by}); summary in {self.run_dir / 'summary.json'}")
        return summary

    def postfix(self, row: dict[str, Any]) -> dict[str, str]:
        return {"loss": f"{row.get('loss', float('nan')):.3g}"}

    def stop_requested(self) -> bool:
        """A STOP file in the run directory; the main process decides for all (they must stop together)."""
        from accelerate.utils import broadcast_object_list

        flag = [(self.run_dir / "STOP").exists() if self.is_main else None]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(flag)
        return bool(flag[0])

    # -- evaluation ------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The one held-out evaluation (workbench/evaluation.py) of the current policy, under the run's EvalSettings.
        Every trainer evaluates through here, with settings read from the fields every config shares."""
        if not self.eval_ids:
            return {}
        maps: list = []
        records: list = []
        before = work.METER.forward_flops
        out = evaluate(self.rollout, self.eval_ids, self.eval_settings, maps=maps, records=records)
        out["work_flops_evaluation"] = (
            work.METER.forward_flops - before
        )  # counted work (workbench/work.py): in the summary too
        if maps and self.is_main:  # the first held-out document's map: one frame of the run's reward-map film
            write_json(self.run_dir / "film" / f"step-{self.step:06d}.json", film_frame(maps[0], self.step))
        if (
            records and self.is_main
        ):  # one row per evaluated position: workbench.compare.compare_runs pairs two runs on them
            folder = self.run_dir / "eval"
            folder.mkdir(exist_ok=True)
            (folder / f"step-{self.step:06d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        return out

    def watch(self, row: dict[str, Any]) -> None:
        """An evaluation row through the reward-hacking monitor: the one warning goes to train.log and into the row."""
        if self.monitor is not None and (warning := self.monitor.observe(row)) is not None:
            row["reward_hacking_warning"] = 1
            row["reward_hacking_since_step"] = warning["since_step"]
            self.note(f"warning: {warning['message']}")

    def matched_start_evaluation(self) -> dict[str, float] | None:
        """Step 0's evaluation read from the run this one is matched to (`match_run`, e.g. NTP at an RLP run's FLOPs)
        when it started from the same model, in the same rollout dtype, on the same CPU kind and versions, under the
        same evaluation settings: the same weights, settings and seeds give the same numbers, so they are copied (metrics
        row, per-answer records, film frame) instead of measured twice. None when anything differs."""
        source = getattr(self.config, "match_run", None)
        if not source or not self.is_main or self.accelerator.num_processes > 1:
            return None
        from workbench.evaluation import recorded_evaluation

        source = Path(source)
        try:
            other = json.loads((source / "run.json").read_text())
        except (OSError, ValueError):
            return None

        def choices(hardware: dict | None) -> dict:  # a dtype's reason quotes a timed probe, whose ratio varies by run
            return {k: v for k, v in (hardware or {}).items() if not k.endswith("_reason")}

        mine = {
            "model_path": self.model_path,
            "evaluation": self.eval_settings.as_dict(),
            "hardware": choices(self.hardware),
            "versions": versions(),
        }
        other = {**other, "hardware": choices(other.get("hardware"))}
        if any(other.get(k) != v for k, v in mine.items()):
            return None
        found = recorded_evaluation(source, 0)
        if found is None:
            return None
        for sub, name in (("eval", "step-000000.jsonl"), ("film", "step-000000.json")):
            if (source / sub / name).exists():
                (self.run_dir / sub).mkdir(exist_ok=True)
                shutil.copyfile(source / sub / name, self.run_dir / sub / name)
        self.note(f"step 0 evaluation read from {source} (the same model, dtype, machine and settings)")
        return {**found, "work_flops_evaluation": 0.0, "time_eval_s": 0.0}

    # -- files -----------------------------------------------------------------------------------

    def _resolve_run_dir(self, resume: bool | str) -> Path:
        cfg = self.config
        if isinstance(resume, str) and resume:
            run_dir = Path(resume)
        elif cfg.output_dir:
            run_dir = Path(cfg.output_dir)
        elif resume:
            root = runs_root()
            candidates = sorted(root.glob(f"{cfg.run_name}-*"), key=lambda p: p.stat().st_mtime)
            candidates = [p for p in candidates if (p / "config.yaml").exists()]
            if not candidates:
                raise WorkbenchError(f"--resume: no run directory {root}/{cfg.run_name}-* to resume; set output_dir")
            run_dir = candidates[-1]
        else:
            return new_run_dir(cfg.run_name)
        if resume:
            if not (run_dir / "config.yaml").exists():
                raise WorkbenchError(f"--resume: {run_dir} is not a run directory (no config.yaml)")
            saved, new = load_config(run_dir / "config.yaml").to_dict(), cfg.to_dict()
            changed = sorted(k for k, v in new.items() if saved.get(k) != v and k not in ("output_dir", "progress"))
            past = [k for k in changed if k not in EXTENDABLE and k not in NOT_IN_FINGERPRINT]
            if "max_steps" in changed and cfg.lr_scheduler not in STEP_FREE_SCHEDULES:
                past.append(
                    f"max_steps (lr_scheduler {cfg.lr_scheduler} spreads its rates over max_steps, so the past "
                    "steps would have had other learning rates)"
                )
            if past:
                raise WorkbenchError(
                    f"--resume: the config differs from the run's own config.yaml in {', '.join(past)}, which would change "
                    f"the steps already trained; resume with the same values (a resumed run may change "
                    f"{', '.join(EXTENDABLE)} and the tracking fields) or start a new run"
                )
            self._extension = {k: [saved.get(k), new[k]] for k in changed}
        elif latest_checkpoint(run_dir) is not None:
            raise WorkbenchError(
                f"{run_dir} already holds a run with checkpoints; pass --resume or choose another output_dir"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir

    def _start_files(self) -> None:
        (self.run_dir / "config.yaml").write_text(self.config.to_yaml())
        write_json(
            self.run_dir / "run.json",
            {
                "seed": self.config.seed,
                "trainer": self.config.trainer,
                "model_path": self.model_path,  # what `model` named when the run started (load_model(RUN_DIR) reads it)
                "config_fingerprint": self.config.fingerprint(),
                "command": sys.argv,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "processes": self.accelerator.num_processes,
                "device": str(self.accelerator.device),
                "hardware": self.hardware,
                "evaluation": self.eval_settings.as_dict(),
                "deviations_from_paper": getattr(self.config, "deviations", []),
                "control": getattr(self.config, "control", "")
                or None,  # a null control, not the method it controls for
                "compute_budget": list(self.stop_budget) if self.stop_budget else None,
                "versions": versions(),
            },
        )
        (self.run_dir / "metrics.jsonl").write_text("")
        self.note(f"run directory {self.run_dir}")
        self.note(f"rollout {self.rollout_choice.describe()}; training mixed precision {self.mixed_precision}")

    def log_row(self, row: dict[str, Any]) -> None:
        if not self.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
        if hasattr(self, "trackers"):  # step 0's evaluation is logged before the trackers start
            self.trackers.log(row, row["step"])

    def note(self, message: str) -> None:
        if not self.is_main:
            return
        line = f"{time.strftime('%H:%M:%S')} {message}"
        with open(self.run_dir / "train.log", "a") as fh:
            fh.write(line + "\n")
        self._print(line)

    def training_ids(self, docs: list[Document]) -> list[list[int]]:
        """The token ids the run trains on (the warm start splices thoughts into them)."""
        ids = tokenize_documents(self.tokenizer, docs, self.config.max_doc_tokens)
        if not ids:
            raise WorkbenchError(f"train_data: no document has at least {MIN_DOC_TOKENS} tokens")
        return ids

    # -- checkpoints -----------------------------------------------------------------------------

    def save(self) -> None:
        self.accelerator.wait_for_everyone()
        self._saved_step = self.step
        sharded = is_sharded(self.policy)
        if not self.is_main and not sharded:
            return
        # sharded (FSDP2): every process takes part in gathering whole tensors; the main process writes them
        if self.config.peft:
            from workbench.adapters import adapter_tensors

            policy = adapter_tensors(self.policy)  # the adapter alone: a few MB (load_model merges it into the base)
        else:
            policy = full_state_dict(self.policy)
        optimizer = full_optimizer_state(self.policy, self.optimizer) if self.config.save_optimizer else None
        if not self.is_main:
            return
        policy = _untie(dict(policy))
        save_checkpoint(
            self.run_dir,
            self.step,
            tensors={"policy": policy, **self.extra_tensors()},
            objects={
                **({"optimizer": optimizer} if optimizer is not None else {}),
                "scheduler": self.scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state()},
            },
            state={
                "step": self.step,
                "flops": self.flops,
                "budget_tokens": self.budget_tokens,
                "config_fingerprint": self.config.fingerprint(),
            },
            keep_last=self.config.keep_last,
        )

    def _record_extension(self) -> None:
        """A resumed run with new values of fields that leave its past steps as they were (a longer max_steps, other
        evaluation or checkpoint intervals, tracking): config.yaml gets the new values, run.json the change."""
        (self.run_dir / "config.yaml").write_text(self.config.to_yaml())
        run_json = self.run_dir / "run.json"
        record = json.loads(run_json.read_text()) if run_json.exists() else {}
        record.setdefault("extensions", []).append(
            {
                "at_step": self.step,
                "changed": self._extension,
                "command": sys.argv,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        record["config_fingerprint"] = self.config.fingerprint()
        write_json(run_json, record)
        self.note("extended: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in self._extension.items()))

    def _resume_checkpoint(self) -> Path | None:
        """The newest complete checkpoint to resume from. Damaged newer ones are set aside (renamed
        `step-NNNNNN.damaged`, kept for inspection, never deleted) with a warning in train.log naming each file."""
        ckpt = usable_checkpoint(self.run_dir, warn=self.note)
        if ckpt is None or not self.is_main:
            return ckpt
        for newer in list_checkpoints(self.run_dir):
            if newer.name > ckpt.name:
                aside = newer.with_name(f"{newer.name}.damaged")
                n = 1
                while aside.exists():
                    aside, n = newer.with_name(f"{newer.name}.damaged-{n}"), n + 1
                os.replace(newer, aside)
                for log in (
                    "metrics.jsonl",
                    "rollouts.jsonl",
                ):  # resuming cuts them back to the checkpoint: keep them whole
                    if (self.run_dir / log).exists():
                        shutil.copyfile(self.run_dir / log, aside / log)
                self.note(
                    f"set the damaged checkpoint aside as {aside.name} (with the logs as they were); the steps "
                    f"after {ckpt.name} are trained again"
                )
        return ckpt

    def _restore(self, ckpt: Path) -> None:
        tensors, objects, state = load_checkpoint(ckpt)
        if "optimizer" not in objects:
            raise WorkbenchError(
                f"cannot resume from {ckpt}: it holds the weights only (the run had save_optimizer: false); "
                "start a new run instead (load_trained reads its weights)"
            )
        if self.config.peft:
            from workbench.adapters import load_adapter_tensors

            load_adapter_tensors(self.policy, tensors.pop("policy"), str(ckpt))
        else:
            _load_weights(self.policy, tensors.pop("policy"), str(ckpt))
        self.release_gathered()  # gathered before the checkpoint's weights were loaded
        load_full_optimizer_state(self.policy, self.optimizer, objects["optimizer"])
        self.scheduler.load_state_dict(objects["scheduler"])
        torch.set_rng_state(objects["rng"]["torch"])
        self.load_extra_tensors(tensors)
        self.step = int(state["step"])
        self._saved_step = self.step
        self.flops = float(state["flops"])
        self.budget_tokens = int(state.get("budget_tokens", 0))
        if self.is_main:
            # rows written after the checkpoint belong to steps that will run again
            kept = [row for row in read_metrics(self.run_dir) if row["step"] <= self.step]
            (self.run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in kept))
            if self.monitor is not None:  # its state is the evaluations so far: replayed, not saved
                for row in kept:
                    self.monitor.observe(row)
            self.rollout_log.truncate_after(self.step)
            self.note(f"resumed from {ckpt.name} (step {self.step})")

    def close(self) -> None:
        """Drop the model, optimizer state and inference copies (gigabytes for Gemma) now, not at exit."""
        import gc

        self.accelerator.free_memory()
        for name in ("model", "optimizer", "scheduler", "_rollout", "_teacher", "_reference", "ema"):
            if hasattr(self, name):
                setattr(self, name, None)
        gc.collect()

    # -- summary ---------------------------------------------------------------------------------

    def summary(self, stopped_by: str, seconds: float) -> dict[str, Any]:
        rows = read_metrics(self.run_dir)
        evals = [r for r in rows if "eval_loss" in r]
        return {
            "trainer": self.config.trainer,
            "model": self.model_name,
            "steps": self.step,
            "stopped_by": stopped_by,
            "total_flops": self.flops,
            "total_budget_tokens": self.budget_tokens,
            # the evaluations' forwards (counted work, workbench/work.py): not training compute, but work the run did
            "total_work_flops_evaluation": float(sum(r.get("work_flops_evaluation", 0.0) for r in rows)),
            "wall_time_s": seconds,
            "first_eval": evals[0] if evals else None,
            "last_eval": evals[-1] if evals else None,
            "last_step": rows[-1] if rows else None,
            "reward_hacking_warning": self.monitor.warning if self.monitor is not None else None,
            **peak_memory_mb(),
        }


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share storage (a tied LM head): keep the first name of each."""
    seen: dict[int, str] = {}
    out = {}
    for name, tensor in state.items():
        key = tensor.untyped_storage().data_ptr()
        if key in seen:
            continue
        seen[key] = name
        out[name] = tensor
    return out


def _load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load a checkpoint's (untied) state dict; only a tied LM head may be missing from it."""
    missing, unexpected = load_full_state_dict(model, state)
    check_loaded(model, missing, unexpected, where)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of <run_dir>/metrics.jsonl (a half-written last line from a killed run is skipped), in today's metric
    names (`metrics.renamed`: a run written under the old spellings reads the same)."""
    return [renamed(row) for row in read_jsonl_rows(Path(run_dir) / "metrics.jsonl")]


def load_trained(
    run_dir: str | Path, role: str = "policy", dtype: str = "auto", checkpoint: str | Path | None = None
) -> ModelHandle:
    """A model handle with the weights of a run's last (or a given) checkpoint: role 'policy' or 'teacher'
    (`load_model(run_dir)` is the same with role 'policy')."""
    from workbench.models import load_run_model

    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    if role != "policy" and config.trainer != "rlp":
        raise WorkbenchError(f"{run_dir} has no {role} weights (the {config.trainer} trainer keeps none)")
    # load_run_model finds the checkpoint (falling back past a damaged newest one) and checks its framing, once
    handle = load_run_model(run_dir, dtype, "auto", config.trust_remote_code, role=role, checkpoint=checkpoint)
    handle.name = config.model if isinstance(config.model, str) and not Path(config.model).is_dir() else handle.name
    return handle
