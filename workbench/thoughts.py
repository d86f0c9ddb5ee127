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

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from workbench.errors import WorkbenchError
from workbench.models import ModelHandle
from workbench.sampling import sample_tokens

ProgressFn = Callable[[int, int], None]


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

    def validate(self) -> "SamplingConfig":
        if not isinstance(self.G, int) or self.G < 1:
            raise WorkbenchError(f"G must be a positive integer (thoughts per position), got {self.G!r}")
        if not isinstance(self.thought_tokens, int) or self.thought_tokens < 0:
            raise WorkbenchError(f"thought_tokens must be an integer >= 0, got {self.thought_tokens!r}")
        if not (self.temperature >= 0 and self.temperature <= 100):
            raise WorkbenchError(f"temperature must be in [0, 100], got {self.temperature!r}")
        if not (0 < self.top_p <= 1):
            raise WorkbenchError(f"top_p must be in (0, 1], got {self.top_p!r}")
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
    closed_by: str  # "marker" (the model closed it), "eos" (the model ended the text) or "budget"
    scored_ids: list[int]  # document_ids[:t] + open + thought + close: exactly what x_t is conditioned on
    logp_with_thought: float  # policy: log p(x_t | scored_ids), natural log

    @property
    def length(self) -> int:
        return len(self.ids)


# --------------------------------------------------------------------------- model plumbing


def lm_logits(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head applied to hidden states (with the final soft-capping some models use)."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def layer_kinds(config) -> set[str]:
    kinds = set(getattr(config, "layer_types", None) or ["full_attention"])
    unsupported = kinds - {"full_attention", "sliding_attention"}
    if unsupported:
        raise WorkbenchError(
            f"the batched thought sampler supports full and sliding-window attention layers, "
            f"not {sorted(unsupported)}"
        )
    return kinds


def new_static_cache(config, max_len: int, n_layers: int | None = None):
    """A cache whose every layer (sliding ones too) keeps all slots; masks decide what each row sees."""
    from transformers.cache_utils import Cache, StaticLayer

    n_layers = config.num_hidden_layers if n_layers is None else n_layers
    return Cache(layers=[StaticLayer(max_cache_len=max_len) for _ in range(n_layers)])


def encode_prefix(model: torch.nn.Module, ids: list[int], max_len: int):
    """Run `ids` once through the model (batch 1). Returns (last hidden states [T, d], cache)."""
    cache = new_static_cache(model.config, max_len)
    inp = torch.tensor([ids], device=next(model.parameters()).device)
    with torch.inference_mode():
        out = model.base_model(input_ids=inp, past_key_values=cache, use_cache=True)
    return out.last_hidden_state[0], cache


def select_rows(cache, keep: torch.Tensor) -> None:
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, keep)
        layer.values = layer.values.index_select(0, keep)
        layer.batch_size = int(keep.numel())


# --------------------------------------------------------------------------- the batched sampler


@dataclass
class _Row:
    position: int
    index: int
    generated: list[int] = field(default_factory=list)
    thought: list[int] | None = None
    closed_by: str = ""
    forced: deque = field(default_factory=deque)
    done: bool = False
    logp: float = float("nan")


class ThoughtSampler:
    """Samples G thoughts at each requested position of a document and scores the target with each.

    All (position, thought) rows of a call decode in one batch (split into chunks of at most
    `max_rows` rows) on top of the document's shared key/value cache.
    """

    def __init__(
        self,
        policy: ModelHandle,
        template: ThoughtTemplate = ThoughtTemplate(),
        config: SamplingConfig = SamplingConfig(),
        max_rows: int = 256,
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
        self.eos_ids = set(_eos_ids(policy))
        self.kinds = layer_kinds(policy.model.config)
        self.window = getattr(policy.model.config, "sliding_window", None) or 10**9
        self._token_text: dict[int, str] = {}

    # -- public API -----------------------------------------------------------------------------

    def sample(
        self,
        document_ids: list[int],
        positions: list[int],
        prefix=None,
        progress: ProgressFn | None = None,
    ) -> list[Thought]:
        """Thoughts for every position (G each), in order of position then index.

        `prefix` is an optional (cache, length) of the policy's encoding of the document, e.g. from the
        no-think pass when the teacher shares the policy's weights, so the document is encoded once.
        """
        if not positions:
            return []
        if min(positions) < 1 or max(positions) >= len(document_ids):
            raise WorkbenchError(
                f"positions must lie in [1, {len(document_ids) - 1}] for a {len(document_ids)}-token document"
            )
        span = max(positions)
        max_len = span + len(self.open_ids) + self.config.thought_tokens + 2 * len(self.close_ids) + 2
        if prefix is not None and prefix[1] >= span:
            cache_src = prefix[0]
        else:
            _, cache_src = encode_prefix(self.policy.model, document_ids[:span], max_len)
        generator = torch.Generator(device="cpu").manual_seed(self.config.seed)
        per_chunk = max(1, self.max_rows // self.config.G)
        chunks = [positions[i : i + per_chunk] for i in range(0, len(positions), per_chunk)]
        total_rows = len(positions) * self.config.G
        done_before = 0
        thoughts: list[Thought] = []
        for chunk in chunks:
            rows = [_Row(p, g) for p in chunk for g in range(self.config.G)]

            def chunk_progress(done: int, _total: int, base: int = done_before) -> None:
                if progress:
                    progress(base + done, total_rows)

            self._decode(document_ids, rows, cache_src, span, max_len, generator, chunk_progress)
            done_before += len(rows)
            thoughts.extend(self._to_thought(document_ids, r) for r in rows)
        return thoughts

    # -- the decode loop --------------------------------------------------------------------------

    def _decode(self, doc, rows, cache_src, span, max_len, generator, progress) -> None:
        model = self.policy.model
        device = next(model.parameters()).device
        cache = _copy_cache_for_rows(cache_src, len(rows), span, max_len)
        n = len(rows)
        t = torch.tensor([r.position for r in rows], device=device)
        slots = torch.arange(max_len, device=device)
        # slot_pos[r, s]: the position id of slot s as row r sees it; -1 = invisible to row r
        slot_pos = torch.where(slots[None, :] < t[:, None], slots[None, :], torch.full_like(slots, -1)[None, :])
        next_pos = t.clone()  # the position id the row's next input token gets
        active = list(range(n))  # rows still in the batch, in batch order
        write = span  # next slot index (the same for every row: all rows write one token per step)

        # 1) the opening marker, fed to every row at once
        m = len(self.open_ids)
        inp = torch.tensor([self.open_ids] * n, device=device)
        logits = self._step(cache, inp, slot_pos, next_pos, write)
        slot_pos[:, write : write + m] = next_pos[:, None] + torch.arange(m, device=device)[None, :]
        next_pos += m
        write += m
        finished = 0
        budget = self.config.thought_tokens
        while active:
            # 2) decide every active row's next input from the logits it just produced
            need_sample = [i for i, ri in enumerate(active) if not rows[ri].forced and rows[ri].thought is None]
            sampled: dict[int, int] = {}
            if need_sample and budget > 0:
                idx = torch.tensor(need_sample, device=device)
                tokens = sample_tokens(logits[idx], self.config.temperature, self.config.top_p, generator)
                sampled = dict(zip(need_sample, tokens.tolist()))
            next_inputs: list[int] = []
            keep: list[int] = []
            for i, ri in enumerate(active):
                row = rows[ri]
                if row.thought is not None and not row.forced:
                    # the closing marker has been fed: these logits score the target
                    lp = torch.log_softmax(logits[i].float(), -1)[doc[row.position]]
                    row.logp = float(lp)
                    row.done = True
                    finished += 1
                    continue
                if row.thought is None:
                    if budget == 0 or len(row.generated) >= budget:
                        self._close(row, "budget")
                    else:
                        self._accept(row, sampled[i], slot_pos, next_pos, i, write)
                keep.append(i)
                next_inputs.append(row.forced.popleft() if row.forced else row.generated[-1])
            progress(finished, n)
            if not keep:
                break
            if len(keep) < len(active):
                keep_t = torch.tensor(keep, device=device)
                select_rows(cache, keep_t)
                slot_pos, next_pos = slot_pos[keep_t], next_pos[keep_t]
                active = [active[i] for i in keep]
            if write >= max_len:  # cannot happen with the budget-derived max_len; guard against silent overrun
                raise RuntimeError("thought sampler ran out of cache slots")
            inp = torch.tensor(next_inputs, device=device)[:, None]
            logits = self._step(cache, inp, slot_pos, next_pos, write)
            slot_pos[:, write] = next_pos
            next_pos += 1
            write += 1

    def _accept(
        self, row: _Row, token: int, slot_pos: torch.Tensor, next_pos: torch.Tensor, i: int, write: int
    ) -> None:
        """Add a sampled token to a thinking row and stop the thought at EOS or the closing marker."""
        if token in self.eos_ids:
            # EOS ends the thought; it is not part of it and is never fed
            self._close(row, "eos")
            return
        row.generated.append(token)
        c = len(self.close_ids)
        if row.generated[-c:] == self.close_ids:
            # canonical marker: its first c-1 tokens are already in the cache, the last is the next input
            row.thought = row.generated[:-c]
            row.closed_by = "marker"
            row.generated.pop()
            row.forced.append(self.close_ids[-1])
            return
        if self.template.close[-1] not in self._text_of(token):
            return
        text = self.policy.tokenizer.decode(row.generated)
        cut = text.find(self.template.close)
        if cut < 0:
            return
        # the model wrote the marker with other tokens: keep the thought tokens before it, mask the
        # rest out of this row's view, and feed the canonical marker
        keep = len(row.generated)
        while keep > 0 and len(self.policy.tokenizer.decode(row.generated[:keep])) > cut:
            keep -= 1
        drop = len(row.generated) - keep - 1  # tokens after the kept ones already written to the cache
        if drop > 0:
            slot_pos[i, write - drop : write] = -1
            next_pos[i] -= drop  # the canonical marker continues right after the kept thought
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

    def _step(self, cache, inp: torch.Tensor, slot_pos: torch.Tensor, next_pos: torch.Tensor, write: int):
        """One forward of q new tokens per row; returns the logits of each row's last new token."""
        q = inp.shape[1]
        device = inp.device
        pos = next_pos[:, None] + torch.arange(q, device=device)[None, :]  # [B, q]
        keys_pos = slot_pos.clone()
        # the q new tokens occupy slots write..write+q-1, causal among themselves
        keys_pos[:, write : write + q] = pos
        visible = keys_pos[:, None, :] >= 0  # [B, 1, S]
        causal = keys_pos[:, None, :] <= pos[:, :, None]  # [B, q, S]
        full = (visible & causal)[:, None]  # [B, 1, q, S]
        masks = {"full_attention": full}
        if "sliding_attention" in self.kinds:
            near = (pos[:, :, None] - keys_pos[:, None, :]) < self.window
            masks["sliding_attention"] = full & near[:, None]
        mask = masks if getattr(self.policy.model.config, "layer_types", None) else masks["full_attention"]
        with torch.inference_mode():
            out = self.policy.model.base_model(
                input_ids=inp,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
            )
            return lm_logits(self.policy.model, out.last_hidden_state[:, -1])

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
        )


def _copy_cache_for_rows(cache_src, rows: int, span: int, max_len: int):
    """A fresh `rows`-row cache holding the first `span` document slots of the batch-1 `cache_src`."""
    cache = new_static_cache(None, max_len, n_layers=len(cache_src.layers))
    for dst, src in zip(cache.layers, cache_src.layers):
        shape = (rows, src.keys.shape[1], max_len, src.keys.shape[3])
        dst.keys = torch.zeros(shape, dtype=src.keys.dtype, device=src.keys.device)
        dst.values = torch.zeros(
            (rows, src.values.shape[1], max_len, src.values.shape[3]), dtype=src.values.dtype, device=src.values.device
        )
        dst.keys[:, :, :span] = src.keys[:, :, :span]
        dst.values[:, :, :span] = src.values[:, :, :span]
        dst.dtype, dst.device = src.keys.dtype, src.keys.device
        dst.batch_size, dst.num_heads = rows, src.keys.shape[1]
        dst.k_head_dim, dst.v_head_dim = src.keys.shape[3], src.values.shape[3]
        dst.cumulative_length = torch.tensor(span, dtype=torch.long, device=src.keys.device)
        dst.is_initialized = True
    return cache


def _eos_ids(policy: ModelHandle) -> list[int]:
    ids: list[int] = []
    for source in (getattr(policy.model, "generation_config", None), policy.model.config, policy.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if value is None:
            continue
        ids.extend(value if isinstance(value, (list, tuple)) else [value])
    return sorted(set(int(i) for i in ids))
