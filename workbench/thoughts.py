"""Sampling thoughts at many positions of one document, in one batch, from one shared prefix cache.

For a position t (target x_t) a thought is sampled as

    document_ids[:t] + open_marker + <thought tokens ...> + close_marker  ->  score x_t

The plain way runs `generate()` once per position and re-encodes every context. Here the document is
encoded once; its key/value cache is copied into every row of the batch, and each row *masks out* the
document slots at or after its own t. Rows for all positions and all G thoughts then decode together,
one token per row per step. Each row carries its own position ids (so RoPE sees t, t+1, ... exactly
as if the context had been encoded alone) and its own sliding-window mask (Gemma 3 mixes sliding
and full attention layers).

The same decode loop also scores the thought: once a row has fed its closing marker, the logits it
produces are log p_policy(x_t | scored_ids), read before the row leaves the batch. A thought that
reaches the token budget gets the closing marker appended (fed as forced tokens). If the model
writes the closing marker with a different tokenisation than the canonical one, those slots are
masked out and the canonical marker is fed instead, so `scored_ids` is always exactly what the
model conditioned on (ids, never re-tokenised text).
"""

from __future__ import annotations

import copy
from collections import deque
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, StaticLayer
from transformers.modeling_utils import AttentionInterface

from workbench.errors import WorkbenchError
from workbench.models import ModelHandle
from workbench.sampling import LMHead


@dataclass(frozen=True)
class ThoughtTemplate:
    """The markers around a thought, inserted as plain text (no new vocabulary).

    RLP's only example uses `<think> ... </think>`.
    """

    open: str = "<think>"
    close: str = "</think>"

    def open_ids(self, tokenizer) -> list[int]:
        return list(tokenizer.encode(self.open, add_special_tokens=False))

    def close_ids(self, tokenizer) -> list[int]:
        return list(tokenizer.encode(self.close, add_special_tokens=False))


@dataclass(frozen=True)
class SamplingConfig:
    """How thoughts are sampled. Defaults follow the RLP paper where it is explicit (temperature 0.7)."""

    G: int = 4  # thoughts per position (paper: 16; 4/8/16/32 score alike)
    thought_tokens: int = 32  # token budget per thought (paper: 2048; the closing marker is appended at the budget)
    temperature: float = 0.7  # paper: 0.7; 0 means greedy
    top_p: float = 1.0  # nucleus; 1.0 samples from the full distribution, as the paper describes
    seed: int = 0  # one generator per call: the same seed, document and positions give the same thoughts
    # guards against the empty-thought collapse (shared/reference/rewards.md, last section)
    allow_eos: bool = True  # False: EOS is never sampled inside a thought (its logit is masked)
    # the closing marker (and EOS) cannot be sampled before this many thought tokens. 0 here, so the views show what
    # an unconstrained model writes, empty thoughts included; the paper's action space is |c| >= 1, which training
    # (RLPConfig.min_thought_tokens) and the held-out evaluation (EvalSettings) use by default
    min_thought_tokens: int = 0

    def validate(self) -> "SamplingConfig":
        if not isinstance(self.G, int) or self.G < 1:
            raise WorkbenchError(f"G must be a positive integer (thoughts per position), got {self.G!r}")
        if not isinstance(self.thought_tokens, int) or self.thought_tokens < 0:
            raise WorkbenchError(f"thought_tokens must be an integer >= 0, got {self.thought_tokens!r}")
        if not (self.temperature >= 0 and self.temperature <= 100):
            raise WorkbenchError(f"temperature must be in [0, 100], got {self.temperature!r}")
        if not (0 < self.top_p <= 1):
            raise WorkbenchError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.min_thought_tokens, int) or not 0 <= self.min_thought_tokens <= self.thought_tokens:
            raise WorkbenchError(
                f"min_thought_tokens must be an integer in [0, thought_tokens={self.thought_tokens}], "
                f"got {self.min_thought_tokens!r}"
            )
        return self

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Thought:
    """One sampled thought at one position, with the policy's with-thought score of the target."""

    position: int  # index t of the target x_t in the document ids
    index: int  # 0..G-1 within the position
    ids: list[int]  # thought tokens, markers excluded
    text: str
    closed_by: str  # "marker" (the model closed it), "eos" (the model ended the text), "budget", or "given" (not sampled)
    scored_ids: list[int]  # document_ids[:t] + open + thought + close: exactly what x_t is conditioned on
    logp_with_thought: float  # policy: log p(x_t | scored_ids), natural log
    hidden_tokens: int = 0  # sampled tokens hidden again because they spelled the closing marker differently
    eos_id: int | None = None  # the EOS token the model sampled to end the thought (closed_by == "eos")
    # the tokens the policy itself sampled to end the thought: the canonical closing ids when it wrote them so, the
    # other tokens it spelled the marker with, or [EOS]; [] at the budget or for a given thought (nothing was sampled)
    stop_ids: list[int] = field(default_factory=list)
    # the policy's most likely next tokens after the thought, (id, log p), when the caller asked for them
    next_top: list[tuple[int, float]] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.ids)


@dataclass
class ForwardCount:
    """What a piece of code ran through a model: tokens fed (each passes every layer once) and LM-head rows computed.
    The FLOP estimate of `workbench.flops` turns the two into FLOPs; counting them where the forwards happen keeps
    the compute accounting auditable."""

    tokens: int = 0
    head_rows: int = 0

    def add(self, tokens: int, head_rows: int) -> None:
        self.tokens += int(tokens)
        self.head_rows += int(head_rows)

    def take(self) -> tuple[int, int]:
        """(tokens, head rows) so far, and reset to zero."""
        out = (self.tokens, self.head_rows)
        self.tokens = self.head_rows = 0
        return out


# --------------------------------------------------------------------------- model plumbing


def layer_kinds(config) -> set[str]:
    kinds = set(getattr(config, "layer_types", None) or ["full_attention"])
    unsupported = kinds - {"full_attention", "sliding_attention"}
    if unsupported:
        raise WorkbenchError(
            f"the batched thought sampler supports full and sliding-window attention layers, "
            f"not {sorted(unsupported)}"
        )
    return kinds


def masks_by_layer_type(config, full: torch.Tensor, distance: torch.Tensor):
    """The attention-mask argument transformers takes as given: `full` (bool, True = attend) for a model with one
    kind of layer; else one mask per layer type, sliding-window layers also dropping keys a window or more back
    (`distance` = position of the query - position of the key, broadcastable to `full`)."""
    if not getattr(config, "layer_types", None):
        return full
    mask = {"full_attention": full}
    if "sliding_attention" in layer_kinds(config):
        window = getattr(config, "sliding_window", None) or 10**9
        mask["sliding_attention"] = full & (distance < window)
    return mask


def new_static_cache(config, max_len: int):
    """A preallocated cache whose every layer (sliding ones too) keeps all slots."""
    return Cache(layers=[StaticLayer(max_cache_len=max_len) for _ in range(config.num_hidden_layers)])


def ensure_prefix(model: torch.nn.Module, document_ids: list[int], span: int, prefix=None, count: "ForwardCount | None" = None):
    """`prefix` if it already holds the first `span` document tokens, else a fresh encoding of them (added to `count`)."""
    if prefix is None or prefix.layers[0].keys.shape[2] < span:
        _, prefix = encode_prefix(model, document_ids[:span], span)
        if count is not None:
            count.add(span, 0)
    return prefix


def encode_prefix(model: torch.nn.Module, ids: list[int], max_len: int):
    """Run `ids` once through the model (batch 1). Returns (last hidden states [T, d], cache)."""
    cache = new_static_cache(model.config, max_len)
    inp = torch.tensor([ids], device=next(model.parameters()).device)
    with torch.inference_mode():
        out = model.base_model(input_ids=inp, past_key_values=cache, use_cache=True)
    return out.last_hidden_state[0], cache


# --------------------------------------------------------------------------- shared-prefix attention
#
# Copying the document's keys/values into every row would make each decode step read B copies of
# the prefix (on Gemma 3 270M with 136 rows: a quarter of the step time in attention). Instead the
# prefix is stored once, every row keeps only its own new tokens, and a small attention function
# computes softmax([q.K_prefix | q.K_own]) with the rows' masks.

SHARED_PREFIX_ATTENTION = "workbench_shared_prefix"
_active_cache: ContextVar["SharedPrefixCache | None"] = ContextVar("workbench_shared_prefix_cache", default=None)


class SharedPrefixLayer(CacheLayerMixin):
    """One layer's cache: the prefix once ([1, kv_heads, S0, d]) plus each row's own tokens."""

    is_sliding = False
    is_compileable = False

    def __init__(self, prefix_keys: torch.Tensor, prefix_values: torch.Tensor, rows: int, own_len: int):
        super().__init__()
        self.prefix_keys, self.prefix_values = prefix_keys, prefix_values
        shape = (rows, prefix_keys.shape[1], own_len, prefix_keys.shape[3])
        self.keys = torch.zeros(shape, dtype=prefix_keys.dtype, device=prefix_keys.device)
        self.values = torch.zeros(
            shape[:3] + (prefix_values.shape[3],), dtype=prefix_values.dtype, device=prefix_values.device
        )
        self.n_own = 0
        self.dtype, self.device = prefix_keys.dtype, prefix_keys.device
        self.is_initialized = True

    def lazy_initialization(self, key_states, value_states) -> None:  # allocated in __init__
        pass

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        q = key_states.shape[2]
        self.keys[:, :, self.n_own : self.n_own + q] = key_states
        self.values[:, :, self.n_own : self.n_own + q] = value_states
        self.n_own += q
        return self.keys[:, :, : self.n_own], self.values[:, :, : self.n_own]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.prefix_keys.shape[2] + self.n_own + query_length, 0

    def get_seq_length(self) -> int:
        return self.prefix_keys.shape[2] + self.n_own

    def get_max_length(self) -> int:
        return self.prefix_keys.shape[2] + self.keys.shape[2]

    def select_rows(self, keep: torch.Tensor) -> None:
        self.keys = self.keys.index_select(0, keep)
        self.values = self.values.index_select(0, keep)


class SharedPrefixCache(Cache):
    def __init__(self, prefix_cache, prefix_len: int, rows: int, own_len: int):
        super().__init__(
            layers=[
                SharedPrefixLayer(
                    layer.keys[:, :, :prefix_len], layer.values[:, :, :prefix_len], rows, own_len
                )
                for layer in prefix_cache.layers
            ]
        )
        self.prefix_len = prefix_len

    def select_rows(self, keep: torch.Tensor) -> None:
        for layer in self.layers:
            layer.select_rows(keep)


def _shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    cache = _active_cache.get()
    if cache is None:  # the model is used outside the sampler: plain SDPA
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    layer = cache.layers[module.layer_idx]
    pk, pv = layer.prefix_keys[0], layer.prefix_values[0]  # [kv_heads, S0, d]
    rows, heads, q, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    s0 = pk.shape[1]
    scaling = dim**-0.5 if scaling is None else scaling
    # [kv_heads, rows * groups * q, d]: all queries that read the same prefix head, as one matmul
    qg = query.reshape(rows, kv_heads, groups * q, dim)
    q_flat = qg.transpose(0, 1).reshape(kv_heads, rows * groups * q, dim)
    s_prefix = torch.bmm(q_flat, pk.transpose(1, 2)).view(kv_heads, rows, groups * q, s0).transpose(0, 1)
    s_own = torch.matmul(qg, key.transpose(2, 3))  # [rows, kv_heads, groups*q, n_own]
    scores = torch.cat([s_prefix, s_own], dim=-1).float() * scaling
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        # [rows, 1, q, S] -> [rows, 1, groups*q, S] matching qg's (group, query) order
        mask = attention_mask[:, :, None].expand(rows, 1, groups, q, attention_mask.shape[-1])
        scores = scores.masked_fill(~mask.reshape(rows, 1, groups * q, -1), float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    p_prefix = probs[..., :s0].transpose(0, 1).reshape(kv_heads, rows * groups * q, s0)
    out = torch.bmm(p_prefix, pv).view(kv_heads, rows, groups * q, -1).transpose(0, 1)
    out = out + torch.matmul(probs[..., s0:], value)
    out = out.reshape(rows, heads, q, -1).transpose(1, 2).contiguous()
    return out, None


AttentionInterface.register(SHARED_PREFIX_ATTENTION, _shared_prefix_attention)


class _SharedPrefixMode:
    """Context manager: route the model's attention through the shared-prefix function."""

    def __init__(self, model: torch.nn.Module, cache: SharedPrefixCache):
        self.model, self.cache = model, cache

    def __enter__(self):
        self.previous = self.model.config._attn_implementation
        self.token = _active_cache.set(self.cache)
        self.model.config._attn_implementation = SHARED_PREFIX_ATTENTION
        return self.cache

    def __exit__(self, *exc) -> None:
        self.model.config._attn_implementation = self.previous
        _active_cache.reset(self.token)


def row_slot_positions(targets: torch.Tensor, total_slots: int) -> torch.Tensor:
    """slot_pos[r, s]: the position id of key slot s as row r sees it, -1 where row r must not look.

    Initially a row sees the document slots before its own target t (slot s has position id s).
    """
    slots = torch.arange(total_slots, device=targets.device)
    return torch.where(slots[None, :] < targets[:, None], slots[None, :], -1)


def shared_prefix_forward(model, cache, inp, slot_pos, next_pos, write: int) -> torch.Tensor:
    """Feed q new tokens per row (`inp` [B, q]) on top of a SharedPrefixCache; returns hidden states [B, q, d].

    Row r's new tokens get position ids next_pos[r] + 0..q-1, see the key slots `slot_pos` marks as
    visible to it and, causally, each other; sliding-window layers also drop keys a window or more back.
    The caller records the new slots in `slot_pos` afterwards if later steps should see them.
    """
    q = inp.shape[1]
    device = inp.device
    pos = next_pos[:, None] + torch.arange(q, device=device)[None, :]  # [B, q]
    keys_pos = slot_pos[:, : write + q].clone()
    keys_pos[:, write : write + q] = pos  # the new tokens, causal among themselves
    visible = keys_pos[:, None, :] >= 0
    causal = keys_pos[:, None, :] <= pos[:, :, None]
    full = (visible & causal)[:, None]  # [B, 1, q, S]
    mask = masks_by_layer_type(model.config, full, (pos[:, :, None] - keys_pos[:, None, :])[:, None])
    out = model.base_model(input_ids=inp, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
    return out.last_hidden_state


def thought_before_marker(ids: list[int], close: str, tokenizer) -> list[int] | None:
    """If the decoded `ids` contain the closing marker text, the longest prefix of `ids` whose text ends
    before the marker starts; else None. (For markers the model spells with other tokens than the canonical ones.)"""
    text = tokenizer.decode(ids)
    cut = text.find(close)
    if cut < 0:
        return None
    keep = len(ids)
    while keep > 0 and len(tokenizer.decode(ids[:keep])) > cut:
        keep -= 1
    return list(ids[:keep])


# --------------------------------------------------------------------------- the batched sampler


@dataclass
class _Row:
    position: int
    index: int
    generated: list[int] = field(default_factory=list)
    thought: list[int] | None = None
    closed_by: str = ""
    forced: deque = field(default_factory=deque)
    logp: float = float("nan")
    hidden: int = 0
    eos: int | None = None
    given: bool = False  # a thought fed as forced tokens, not sampled
    top: list[tuple[int, float]] = field(default_factory=list)
    stop: list[int] = field(default_factory=list)  # the sampled tokens that ended the thought (Thought.stop_ids)


BACKENDS = ("transformers", "vllm")


def backend_unavailable(backend: str) -> str | None:
    """Why `backend` cannot run here, or None when it can."""
    if backend == "transformers":
        return None
    if backend == "vllm":
        from workbench.vllm_backend import vllm_unavailable

        return vllm_unavailable()
    return f"unknown sampling backend {backend!r}; choose from {', '.join(BACKENDS)}"


class ThoughtSampler:
    """Samples G thoughts at each requested position of a document and scores the target with each.

    backend="transformers" (default): all (position, thought) rows of a call decode in one batch
    (split into chunks of at most `max_rows` rows) on top of the document's shared key/value cache.
    backend="vllm": the same interface and semantics on a vLLM engine (`workbench.vllm_backend`).
    """

    backend = "transformers"

    def __new__(cls, *args, backend: str = "transformers", **kwargs):
        if cls is ThoughtSampler and backend != "transformers":
            reason = backend_unavailable(backend)
            if reason:
                raise WorkbenchError(reason)
            from workbench.vllm_backend import VLLMThoughtSampler

            return super().__new__(VLLMThoughtSampler)
        return super().__new__(cls)

    def __init__(
        self,
        policy: ModelHandle,
        template: ThoughtTemplate = ThoughtTemplate(),
        config: SamplingConfig = SamplingConfig(),
        max_rows: int = 256,
        backend: str = "transformers",
    ) -> None:
        self.policy = policy
        self.template = template
        self.config = config.validate()
        self.max_rows = max_rows
        tok = policy.tokenizer
        self.open_ids = template.open_ids(tok)
        self.close_ids = template.close_ids(tok)
        if not self.open_ids or not self.close_ids:
            raise WorkbenchError("the thought template's open and close markers must not be empty")
        self.eos_ids = set(stop_token_ids(policy))
        layer_kinds(policy.model.config)  # fail early on attention types the sampler cannot mask
        self._token_text: dict[int, str] = {}
        self.head = LMHead.of(policy.model)  # computed in vocabulary chunks into one reused buffer
        self.compute = ForwardCount()  # every token this sampler ran through the model, and every LM-head row

    # -- public API -----------------------------------------------------------------------------

    def with_config(self, config: SamplingConfig) -> "ThoughtSampler":
        """The same sampler (same model, template and engine) with other sampling settings."""
        other = copy.copy(self)
        other.config = config.validate()
        other.head = LMHead.of(self.policy.model)  # its own buffer: two samplers may interleave
        other.compute = ForwardCount()
        return other

    def sample(
        self,
        document_ids: list[int],
        positions: list[int],
        prefix=None,
        progress: Callable[[int, int], None] | None = None,
        top_k: int = 0,
    ) -> list[Thought]:
        """Thoughts for every position (G each), in order of position then index. `top_k` > 0 also records each
        thought's k most likely next tokens after it (`Thought.next_top`).

        `prefix` is an optional cache of the policy's encoding of at least document_ids[:max(positions)]
        (e.g. from the no-think pass when the teacher shares the policy's weights), so the document is
        encoded once. `progress(done, total)` counts work units: each row's thought-token budget plus one for
        its score (a row that closes early counts its whole budget), so a bar moves every decode step.
        """
        if not positions:
            return []
        self.check_positions(document_ids, positions)
        span = max(positions)
        prefix = ensure_prefix(self.policy.model, document_ids, span, prefix, self.compute)
        generator = torch.Generator(device=next(self.policy.model.parameters()).device).manual_seed(self.config.seed)
        per_chunk = max(1, self.max_rows // self.config.G)
        units = self.config.thought_tokens + 1  # per row: its budget, then its score
        total = len(positions) * self.config.G * units
        own_len = len(self.open_ids) + self.config.thought_tokens + 2 * len(self.close_ids) + 2
        thoughts: list[Thought] = []
        for start in range(0, len(positions), per_chunk):
            rows = [_Row(p, g) for p in positions[start : start + per_chunk] for g in range(self.config.G)]
            base = len(thoughts) * units
            self._decode(
                document_ids,
                rows,
                prefix,
                span,
                generator,
                lambda done, base=base: progress(base + done, total) if progress else None,
                own_len,
                top_k,
            )
            thoughts.extend(self._to_thought(document_ids, r) for r in rows)
        return thoughts

    def score(
        self,
        document_ids: list[int],
        given: list[tuple[int, list[int]]],
        prefix=None,
        progress: Callable[[int, int], None] | None = None,
        top_k: int = 0,
        exact: bool = True,
    ) -> list[Thought]:
        """Score given thoughts, (position, thought token ids) pairs, exactly as sampled ones are scored.

        `exact` (default): the thought's ids are fed as forced tokens through the same decode loop, batch and shared
        prefix that sampling uses, so the ids of thoughts `sample` returned, given back in the same order, reproduce
        their `logp_with_thought` bitwise (the same kernels on the same batch shapes). `exact=False`: each row's
        markers and thought go through the model in one forward instead of one token per step - the same
        numbers up to float rounding, several times faster for one long thought (the thought editor).
        `top_k` > 0 also records each thought's k most likely next tokens (`Thought.next_top`). Returns one
        Thought per pair, in order (closed_by "given"); a thought's `index` counts the thoughts given before it
        at the same position.
        """
        if not given:
            return []
        self.check_positions(document_ids, [t for t, _ in given])
        span = max(t for t, _ in given)
        prefix = ensure_prefix(self.policy.model, document_ids, span, prefix, self.compute)
        seen: dict[int, int] = {}
        rows = []
        for t, ids in given:
            row = _Row(t, seen.get(t, 0), thought=list(ids), closed_by="given", given=True)
            row.forced.extend(list(ids) + self.close_ids)
            seen[t] = row.index + 1
            rows.append(row)
        total = sum(len(r.forced) + 1 for r in rows)
        thoughts: list[Thought] = []
        done_before = 0
        for start in range(0, len(rows), self.max_rows):
            chunk = rows[start : start + self.max_rows]
            if not exact:
                self._teacher_force(document_ids, chunk, prefix, span, top_k)
                thoughts.extend(self._to_thought(document_ids, r) for r in chunk)
                continue
            own_len = len(self.open_ids) + max(len(r.forced) for r in chunk) + 1
            self._decode(
                document_ids,
                chunk,
                prefix,
                span,
                None,
                lambda done, base=done_before: progress(base + done, total) if progress else None,
                own_len,
                top_k,
            )
            done_before += sum(len(r.thought) + len(self.close_ids) + 1 for r in chunk)
            thoughts.extend(self._to_thought(document_ids, r) for r in chunk)
        return thoughts

    @staticmethod
    def check_positions(document_ids: list[int], positions: list[int]) -> None:
        if min(positions) < 1 or max(positions) >= len(document_ids):
            raise WorkbenchError(
                f"positions must lie in [1, {len(document_ids) - 1}] for a {len(document_ids)}-token document"
            )

    # -- the decode loop --------------------------------------------------------------------------

    def _decode(self, doc, rows: list[_Row], prefix, span: int, generator, progress, own_len: int, top_k: int = 0) -> None:
        """Decode all `rows` together until each has fed its closing marker and scored its target.

        A row samples its thought, or (`given`) feeds a thought already in its `forced` tokens; `own_len` bounds the
        tokens any row writes after the prefix. `top_k`: also keep each row's k most likely next tokens."""
        model = self.policy.model
        device = next(model.parameters()).device
        cache = SharedPrefixCache(prefix, span, len(rows), own_len)
        t = torch.tensor([r.position for r in rows], device=device)
        # -1 marks what a row must not see: document slots at or after its t, unwritten slots, and
        # tokens hidden again by a rewind
        slot_pos = row_slot_positions(t, span + own_len)
        next_pos = t.clone()  # the position id of each row's next input token
        active = list(range(len(rows)))  # indices into `rows` of the rows still in the batch
        write = span  # the next key slot; every row writes one token per step into the same slot
        with _SharedPrefixMode(model, cache):
            # 1) the opening marker, fed to every row at once; every sampling row then wants a sampled token (a row
            # feeding a given thought needs no logits until it has fed its closing marker)
            want = [b for b, r in enumerate(rows) if not r.given]  # batch indices whose hidden states we keep, in order
            inp = torch.tensor([self.open_ids] * len(rows), device=device)
            hidden = self._step(cache, inp, slot_pos, next_pos, write, want)
            m = len(self.open_ids)
            slot_pos[:, write : write + m] = next_pos[:, None] + torch.arange(m, device=device)
            next_pos += m
            write += m
            cfg = self.config
            while active:
                # 2) from the hidden states just produced, choose each active row's next input token
                where = {b: k for k, b in enumerate(want)}
                sampling = [b for b in want if self._thinking(rows[active[b]])]
                bans = self._stop_bans([where[b] for b in sampling], [rows[active[b]] for b in sampling])
                head = self.head.step(hidden, [where[b] for b in sampling], cfg.temperature, bans) if want else None
                sampled: dict[int, int] = {}
                if sampling:
                    tokens = self.head.sample(head, cfg.temperature, cfg.top_p, generator)
                    sampled = dict(zip(sampling, tokens.tolist()))
                next_inputs: list[int] = []
                keep: list[int] = []
                for b, ri in enumerate(active):
                    row = rows[ri]
                    if row.thought is not None and not row.forced:
                        # its closing marker is fed: these logits are log p_policy(. | scored_ids)
                        row.logp = self.head.log_prob(head, where[b], doc[row.position])
                        if top_k:
                            row.top = self.head.top_tokens(head, where[b], top_k)
                        continue
                    if row.thought is None:
                        if len(row.generated) >= self.config.thought_tokens:
                            self._close(row, "budget")
                        else:
                            self._accept(row, sampled[b], slot_pos, next_pos, b, write)
                    keep.append(b)
                    next_inputs.append(row.forced.popleft() if row.forced else row.generated[-1])
                progress(self._work_done(rows))
                if not keep:
                    break
                if len(keep) < len(active):
                    keep_t = torch.tensor(keep, device=device)
                    cache.select_rows(keep_t)
                    slot_pos, next_pos = slot_pos[keep_t], next_pos[keep_t]
                    active = [active[b] for b in keep]
                # 3) which rows will need logits after this step: thinking rows (to sample) and rows
                # feeding the last token of their closing marker (to score); the rest skip the LM head
                # (a row that has just fed the last token of its budget needs none: it is closed next, by force)
                want = [b for b, ri in enumerate(active)
                        if self._thinking(rows[ri]) or (rows[ri].thought is not None and not rows[ri].forced)]
                inp = torch.tensor(next_inputs, device=device)[:, None]
                hidden = self._step(cache, inp, slot_pos, next_pos, write, want)
                slot_pos[:, write] = next_pos
                next_pos += 1
                write += 1

    def _teacher_force(self, doc, rows: list[_Row], prefix, span: int, top_k: int) -> None:
        """Score given rows with one forward each: open + thought + close, right-padded, on the shared prefix (a padding
        slot comes after every real token of its row, so no real token attends to it)."""
        model = self.policy.model
        device = next(model.parameters()).device
        pad = self.policy.tokenizer.pad_token_id or 0
        owns = [self.open_ids + list(r.thought) + self.close_ids for r in rows]
        width = max(len(o) for o in owns)
        t = torch.tensor([r.position for r in rows], device=device)
        cache = SharedPrefixCache(prefix, span, len(rows), width)
        slot_pos = row_slot_positions(t, span + width)
        inp = torch.tensor([o + [pad] * (width - len(o)) for o in owns], device=device)
        with _SharedPrefixMode(model, cache), torch.inference_mode():
            hidden = shared_prefix_forward(model, cache, inp, slot_pos, t.clone(), span)
            last = hidden[torch.arange(len(rows), device=device), torch.tensor([len(o) - 1 for o in owns], device=device)]
            head = self.head.step(last, [], 1.0)
        self.compute.add(inp.numel(), len(rows))  # padding slots are computed too
        for k, row in enumerate(rows):
            row.logp = self.head.log_prob(head, k, doc[row.position])
            row.top = self.head.top_tokens(head, k, top_k) if top_k else []
            row.forced.clear()

    def _stop_bans(self, head_rows: list[int], rows: list[_Row]) -> list[tuple[list[int], list[int]]]:
        """The guards, as (head rows, token ids) to mask: no EOS inside a thought, no closing marker or EOS before
        the minimum length. `head_rows[k]` is the LM-head row of the sampling row `rows[k]`.

        Masking changes the sampling distribution only; the losses still use the model's own
        (unmasked) probabilities of the tokens that were sampled."""
        cfg = self.config
        if cfg.allow_eos and cfg.min_thought_tokens == 0:
            return []
        eos = sorted(i for i in self.eos_ids if i < self.head.vocab)
        bans = []
        early = [head_rows[k] for k, row in enumerate(rows) if len(row.generated) < cfg.min_thought_tokens]
        if early:
            bans.append((early, [self.close_ids[0]] + eos))
        if not cfg.allow_eos and eos:
            bans.append((list(head_rows), eos))
        return bans

    def _work_done(self, rows: list[_Row]) -> int:
        """Progress units finished: each row's sampled tokens (its whole budget once closed), or the given thought's
        tokens fed so far, plus 1 once scored."""
        budget, close = self.config.thought_tokens, len(self.close_ids)
        return sum(
            (len(r.thought) + close - len(r.forced) if r.given else budget if r.thought is not None else len(r.generated))
            + (r.logp == r.logp)  # logp is NaN until scored
            for r in rows
        )

    def _thinking(self, row: _Row) -> bool:
        """Whether the row's next token is to be sampled (an open thought still under its budget)."""
        return row.thought is None and len(row.generated) < self.config.thought_tokens

    def _accept(
        self, row: _Row, token: int, slot_pos: torch.Tensor, next_pos: torch.Tensor, b: int, write: int
    ) -> None:
        """Add a sampled token to a thinking row and stop the thought at EOS or the closing marker."""
        if token in self.eos_ids:
            # EOS ends the thought; it is not part of it and is never fed
            row.eos = token
            self._close(row, "eos")
            row.stop = [token]
            return
        row.generated.append(token)
        c = len(self.close_ids)
        if row.generated[-c:] == self.close_ids:
            # canonical marker: its first c-1 tokens are already in the cache, the last is the next input
            row.thought = row.generated[:-c]
            row.closed_by = "marker"
            row.stop = list(self.close_ids)
            row.generated.pop()
            row.forced.append(self.close_ids[-1])
            return
        if self.template.close[-1] not in self._text_of(token):
            return
        kept = thought_before_marker(row.generated, self.template.close, self.policy.tokenizer)
        if kept is None or len(kept) < self.config.min_thought_tokens:
            return  # under the minimum length the marker's text stays part of the thought
        # the model wrote the marker with other tokens: keep the thought tokens before it, hide the
        # rest from this row, and feed the canonical marker right after the kept thought
        keep = len(kept)
        drop = len(row.generated) - keep - 1  # tokens after the kept ones already written to the cache
        if drop > 0:
            slot_pos[b, write - drop : write] = -1
            next_pos[b] -= drop
        row.hidden = drop
        row.stop = row.generated[keep:]  # what the policy sampled, in the context it sampled it in
        row.thought = row.generated[:keep]
        row.closed_by = "marker"
        row.generated = list(row.thought)
        row.forced.extend(self.close_ids)

    def _close(self, row: _Row, reason: str) -> None:
        row.thought = list(row.generated)
        row.closed_by = reason
        row.forced.extend(self.close_ids)

    def _text_of(self, token: int) -> str:
        text = self._token_text.get(token)
        if text is None:
            text = self.policy.tokenizer.decode([token])
            self._token_text[token] = text
        return text

    def _step(self, cache, inp, slot_pos, next_pos, write: int, want: list[int]) -> torch.Tensor:
        """Feed q new tokens per row; return the hidden state of the last new token of the rows in `want`
        (the LM head runs on these only: the other rows feed forced tokens and need no logits)."""
        self.compute.add(inp.numel(), len(want))
        with torch.inference_mode():
            hidden = shared_prefix_forward(self.policy.model, cache, inp, slot_pos, next_pos, write)[:, -1]
            if len(want) < hidden.shape[0]:
                hidden = hidden.index_select(0, torch.tensor(want, dtype=torch.long, device=inp.device))
            return hidden

    def _to_thought(self, doc: list[int], row: _Row) -> Thought:
        thought = row.thought or []
        scored = list(doc[: row.position]) + self.open_ids + thought + self.close_ids
        return Thought(
            position=row.position,
            index=row.index,
            ids=list(thought),
            text=self.policy.tokenizer.decode(thought),
            closed_by=row.closed_by,
            scored_ids=scored,
            logp_with_thought=row.logp,
            hidden_tokens=row.hidden,
            eos_id=row.eos,
            next_top=list(row.top),
            stop_ids=list(row.stop),
        )


END_OF_TURN_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>")


def stop_token_ids(policy: ModelHandle) -> list[int]:
    """The ids that end a thought other than the closing marker: every EOS id the model's generation config, model
    config and tokenizer name, plus the end-of-turn tokens the tokenizer defines (Gemma's `<end_of_turn>` is not
    its EOS; SmolLM2's `<|im_end|>` is). The one rule for "the model ended the text" - the sampler, the vLLM
    backend and the TRL adapter all read it."""
    ids: list[int] = []
    for source in (getattr(policy.model, "generation_config", None), policy.model.config, policy.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if value is None:
            continue
        ids.extend(value if isinstance(value, (list, tuple)) else [value])
    vocab = policy.tokenizer.get_vocab()
    special = set(getattr(policy.tokenizer, "all_special_tokens", [])) | set(
        getattr(policy.tokenizer, "added_tokens_encoder", {}) or {})
    ids.extend(vocab[name] for name in END_OF_TURN_TOKENS if name in vocab and name in special)
    return sorted(set(int(i) for i in ids))


def sample_after_thoughts(
    policy: ModelHandle,
    document_ids: list[int],
    thoughts: list[Thought],
    template: ThoughtTemplate,
    n_tokens: int,
    config: SamplingConfig = SamplingConfig(),
    prefix=None,
    max_rows: int = 128,
    count: ForwardCount | None = None,
) -> list[list[int]]:
    """What the model writes after each thought's closing marker: up to `n_tokens` sampled tokens per thought
    (stopping at EOS), e.g. its stated guess of the continuation (RPT).

    Each row feeds open + thought + close in one right-padded step on the shared document prefix; padding
    slots are then hidden from the row, and the guess decodes one token per row per step.
    """
    model, tok = policy.model, policy.tokenizer
    device = next(model.parameters()).device
    open_ids, close_ids = template.open_ids(tok), template.close_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    eos = set(stop_token_ids(policy))
    span = max(th.position for th in thoughts)
    count = count if count is not None else ForwardCount()
    prefix = ensure_prefix(model, document_ids, span, prefix, count)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    head = LMHead.of(model)
    guesses: list[list[int]] = []
    for first in range(0, len(thoughts), max_rows):
        chunk = thoughts[first : first + max_rows]
        owns = [open_ids + list(th.ids) + close_ids for th in chunk]
        width = max(len(o) for o in owns)
        lengths = torch.tensor([len(o) for o in owns], device=device)
        inp = torch.tensor([o + [pad] * (width - len(o)) for o in owns], device=device)
        t = torch.tensor([th.position for th in chunk], device=device)
        cache = SharedPrefixCache(prefix, span, len(chunk), width + n_tokens + 1)
        slot_pos = row_slot_positions(t, span + width + n_tokens + 1)
        rows_out: list[list[int]] = [[] for _ in chunk]
        alive = [True] * len(chunk)
        with _SharedPrefixMode(model, cache), torch.inference_mode():
            hidden = shared_prefix_forward(model, cache, inp, slot_pos, t.clone(), span)
            count.add(inp.numel(), 0)
            offsets = torch.arange(width, device=device)
            real = offsets[None, :] < lengths[:, None]
            slot_pos[:, span : span + width] = torch.where(real, t[:, None] + offsets[None, :], -1)
            last = hidden[torch.arange(len(chunk), device=device), lengths - 1]
            next_pos = t + lengths
            write = span + width
            for _ in range(n_tokens):
                out = head.step(last, list(range(len(chunk))), config.temperature)
                count.add(0, len(chunk))
                tokens = head.sample(out, config.temperature, config.top_p, generator).tolist()
                for r, token in enumerate(tokens):
                    if alive[r]:
                        if token in eos:
                            alive[r] = False
                        else:
                            rows_out[r].append(token)
                if not any(alive):
                    break
                step = torch.tensor(tokens, device=device)[:, None]
                last = shared_prefix_forward(model, cache, step, slot_pos, next_pos, write)[:, -1]
                count.add(step.numel(), 0)
                slot_pos[:, write] = next_pos
                next_pos = next_pos + 1
                write += 1
        guesses.extend(rows_out)
    return guesses
