"""log pi_theta(thought token | context): the loss pass's forward, with gradients.

Two ways to lay the rows out, giving the same numbers:

- `token_logps`: one left-padded row per thought, each with its whole context. Simple, and what any
  attention implementation runs; but a context of T tokens is recomputed once per thought (G times).
- `packed_token_logps`: the rows of one document packed into one sequence, the document's prefix once,
  then every thought's own tokens, under a mask that lets each thought see only the prefix before its
  position t and itself (position ids restart at t for each thought). The prefix is computed once for
  all thoughts of all positions in the document, and gradients flow into it from every thought, as they
  do when each row carries its own copy. Needs an attention implementation that takes a custom mask
  (sdpa, eager).

Both return log-probs [rows, K] right-aligned (row i's targets in the last len(targets) columns) and the
mask of real targets, so the loss code does not care which ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.engine.prefix_cache import layer_kinds, masks_by_layer_type
from workbench.errors import WorkbenchError

PACKABLE_ATTENTION = ("sdpa", "eager")


@dataclass
class TrainRow:
    """One thought as the loss sees it: the inputs to feed and the sampled tokens to score.

    The logits at the last len(targets) input positions predict `targets`. `doc` and `position` say
    which document the row continues and where its own tokens start (inputs[:position] is that document's
    prefix): rows of one document share their prefix in `packed_token_logps`."""

    inputs: list[int]
    targets: list[int]
    advantage: float
    doc: int = -1
    position: int = -1
    # the sampler's log p of each target (Thought.sampled_logps), None where it was not reported: the trainer compares
    # them with its own to log the gap an update that assumes ratio 1 ignores (rl_math.sampler_gap)
    sampler_logps: list[float] | None = None


def _temperature_logps(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature  # as in TRL: the ratio uses the distribution that was sampled
    return logits.gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits, -1)


def token_logps(
    model: torch.nn.Module, rows: list[TrainRow], temperature: float, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(target | inputs) per target token, [rows, K] with a mask, in one left-padded forward.

    Left padding puts every row's targets at the end, so the LM head runs on the last K positions only
    (Gemma's vocabulary is 262k). Logits are divided by the sampling temperature, as in TRL."""
    device = next(model.parameters()).device
    length = max(len(r.inputs) for r in rows)
    k = max(len(r.targets) for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    targets = torch.zeros((len(rows), k), dtype=torch.long)
    mask = torch.zeros((len(rows), k), dtype=torch.bool)
    for i, row in enumerate(rows):
        input_ids[i, length - len(row.inputs) :] = torch.tensor(row.inputs)
        attention[i, length - len(row.inputs) :] = 1
        targets[i, k - len(row.targets) :] = torch.tensor(row.targets)
        mask[i, k - len(row.targets) :] = True
    input_ids, attention, targets, mask = (x.to(device) for x in (input_ids, attention, targets, mask))
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids, attention_mask=attention, position_ids=position_ids, logits_to_keep=k, use_cache=False
    )
    logp = _temperature_logps(out.logits, targets, temperature)
    return logp * mask, mask


def trainer_minus_sampler(logp: torch.Tensor, mask: torch.Tensor, rows: list[TrainRow]) -> torch.Tensor:
    """log pi_trainer - log pi_sampler per target token of the rows that carry the sampler's log-probs, flattened;
    `logp` and `mask` as `token_logps` returns them (each row's targets right-aligned)."""
    k = logp.shape[1]
    parts = []
    for i, row in enumerate(rows):
        if row.sampler_logps is None or not row.targets:
            continue
        n = len(row.targets)
        sampler = torch.tensor(row.sampler_logps, dtype=torch.float64, device=logp.device)
        trainer = logp[i, k - n :].double()
        keep = mask[i, k - n :] & torch.isfinite(sampler)
        parts.append((trainer - sampler)[keep])
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=logp.device)


def fed_tokens(rows: list[TrainRow], packed: bool) -> int:
    """Tokens one forward of `rows` computes (padding aside): the FLOPs count of the loss pass."""
    if not packed:
        return sum(len(r.inputs) for r in rows)
    spans: dict[int, int] = {}
    for r in rows:
        spans[r.doc] = max(spans.get(r.doc, 0), r.position)
    return sum(spans.values()) + sum(len(r.inputs) - r.position for r in rows)


@dataclass
class PackedDocument:
    """One document's rows as one sequence: prefix, then each row's own tokens (inputs[position:])."""

    input_ids: torch.Tensor  # [L]
    position_ids: torch.Tensor  # [L]
    segment: torch.Tensor  # [L]: -1 for the prefix, i for row i's own tokens
    limit: torch.Tensor  # [L]: an own token of row i sees prefix slots < rows[i].position
    predict_at: torch.Tensor  # [sum of len(targets)]: the slots whose logits predict the targets, row by row


def pack_document(rows: list[TrainRow]) -> PackedDocument:
    """Lay out rows of one document (same `doc`) as prefix + own tokens; checks that they share the prefix."""
    if len({r.doc for r in rows}) != 1:
        raise ValueError("pack_document takes the rows of one document")
    longest = max(rows, key=lambda r: r.position)
    span = longest.position
    prefix = longest.inputs[:span]
    ids, pos, seg, limit = list(prefix), list(range(span)), [-1] * span, [0] * span
    predict_at = []
    for i, row in enumerate(rows):
        own = row.inputs[row.position :]
        first = len(own) - len(row.targets)  # own index whose logits predict targets[0]
        if row.position < 1 or first < 0 or row.inputs[: row.position] != prefix[: row.position]:
            raise ValueError(f"row {i} does not continue the document's prefix at its position {row.position}")
        start = len(ids)
        predict_at.extend(range(start + first, start + len(own)))
        ids += own
        pos += range(row.position, row.position + len(own))
        seg += [i] * len(own)
        limit += [row.position] * len(own)
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return PackedDocument(as_long(ids), as_long(pos), as_long(seg), as_long(limit), as_long(predict_at))


def packed_mask(packed: PackedDocument) -> torch.Tensor:
    """[L, L] bool, True where query slot q may attend to key slot k.

    Prefix slots: causal. Row i's own slots: prefix slots with position < row i's position, and row i's own
    earlier slots (never another row's). Sliding windows are applied by position, in `_attention_mask`."""
    slots = torch.arange(len(packed.input_ids))
    seg, pos = packed.segment, packed.position_ids
    same_row = (seg[:, None] == seg[None, :]) & (slots[None, :] <= slots[:, None])  # causal within a segment
    prefix_seen = (seg[None, :] == -1) & (pos[None, :] < packed.limit[:, None])
    return same_row | prefix_seen


def _attention_mask(model: torch.nn.Module, packed: PackedDocument, device: torch.device, dtype: torch.dtype):
    """The mask argument for the packed forward: [1, 1, L, L], per layer type where the model has several (sliding
    windows by position, as in the unpacked sequence); additive floats for eager attention."""
    pos = packed.position_ids.to(device)
    masks = masks_by_layer_type(model.config, packed_mask(packed).to(device)[None, None], pos[:, None] - pos[None, :])

    def as_arg(visible: torch.Tensor) -> torch.Tensor:
        if model.config._attn_implementation == "eager":  # eager adds the mask to the scores
            return torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill(~visible, torch.finfo(dtype).min)
        return visible

    return {kind: as_arg(m) for kind, m in masks.items()} if isinstance(masks, dict) else as_arg(masks)


def can_pack(model: torch.nn.Module) -> bool:
    """Whether `packed_token_logps` runs on this model (its attention takes a custom mask; full or sliding layers)."""
    try:
        layer_kinds(model.config)
    except WorkbenchError:
        return False
    return model.config._attn_implementation in PACKABLE_ATTENTION


def packed_token_logps(
    model: torch.nn.Module, rows: list[TrainRow], temperature: float, base: torch.nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_logps` with each document's prefix run once: one packed forward per document among `rows`.

    `model` is what is called (a DDP/FSDP wrapper, so gradients synchronise); `base` the unwrapped model
    (its config). Rows may come from several documents; the result is in the order of `rows`."""
    base = base if base is not None else model
    device = next(base.parameters()).device
    k = max(len(r.targets) for r in rows)
    logp = torch.zeros((len(rows), k), device=device)
    mask = torch.zeros((len(rows), k), dtype=torch.bool, device=device)
    by_doc: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_doc.setdefault(row.doc, []).append(i)
    dtype = next(base.parameters()).dtype
    for members in by_doc.values():
        packed = pack_document([rows[i] for i in members])
        out = model(
            input_ids=packed.input_ids[None].to(device),
            position_ids=packed.position_ids[None].to(device),
            attention_mask=_attention_mask(base, packed, device, dtype),
            logits_to_keep=packed.predict_at.to(device),
            use_cache=False,
        )
        targets = torch.tensor([t for i in members for t in rows[i].targets], device=device)
        flat = _temperature_logps(out.logits[0], targets, temperature)  # [sum of len(targets)]
        # right-align each row's targets, as token_logps does
        index_rows = torch.tensor([i for i in members for _ in rows[i].targets], device=device)
        index_cols = torch.tensor(
            [k - len(rows[i].targets) + j for i in members for j in range(len(rows[i].targets))], device=device
        )
        logp = logp.index_put((index_rows, index_cols), flat)
        mask[index_rows, index_cols] = True
    return logp, mask
