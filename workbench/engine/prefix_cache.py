"""The document's key/value cache shared by every (position, thought) row of a batch.

The document is encoded once; each row *masks out* the document slots at or after its own position t and keeps only
its own new tokens, and an attention function registered with transformers computes softmax([q.K_prefix | q.K_own])
with the rows' masks. Each row carries its own position ids (RoPE sees t, t+1, ... exactly as if its context had been
encoded alone) and its own sliding-window mask (Gemma 3 mixes sliding and full attention layers). The sampler and the
scorer both run on it.
"""

from __future__ import annotations

from contextvars import ContextVar

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, StaticLayer
from transformers.modeling_utils import AttentionInterface

from workbench.engine.thought import ForwardCount
from workbench.errors import WorkbenchError

# --------------------------------------------------------------------------- model plumbing


def layer_kinds(config) -> set[str]:
    kinds = set(getattr(config, "layer_types", None) or ["full_attention"])
    unsupported = kinds - {"full_attention", "sliding_attention"}
    if unsupported:
        raise WorkbenchError(
            f"the batched thought sampler supports full and sliding-window attention layers, not {sorted(unsupported)}"
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


def ensure_prefix(
    model: torch.nn.Module, document_ids: list[int], span: int, prefix=None, count: ForwardCount | None = None
):
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
_active_cache: ContextVar[SharedPrefixCache | None] = ContextVar("workbench_shared_prefix_cache", default=None)


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
                SharedPrefixLayer(layer.keys[:, :, :prefix_len], layer.values[:, :, :prefix_len], rows, own_len)
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

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
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


class SharedPrefixMode:
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
