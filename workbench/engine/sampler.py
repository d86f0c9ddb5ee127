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
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from workbench.engine.prefix_cache import (
    SharedPrefixCache,
    SharedPrefixMode,
    ensure_prefix,
    layer_kinds,
    row_slot_positions,
    shared_prefix_forward,
)
from workbench.engine.thought import (
    ForwardCount,
    SamplingConfig,
    Thought,
    ThoughtTemplate,
    end_of_thought,
    stop_token_ids,
)
from workbench.engine.token_sampling import LMHead
from workbench.errors import WorkbenchError
from workbench.models import ModelHandle

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
    logps: list[float] = field(default_factory=list)  # log p of each sampled token, in order (Thought.sampled_logps)


class ThoughtSampler:
    """Samples G thoughts at each requested position of a document and scores the target with each.

    All (position, thought) rows of a call decode in one batch (split into chunks of at most `max_rows` rows) on top
    of the document's shared key/value cache. `make_sampler(..., backend="vllm")` (engine.backends) gives the same
    interface and semantics on a vLLM engine.
    """

    backend = "transformers"

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
        self.eos_ids = set(stop_token_ids(policy))
        layer_kinds(policy.model.config)  # fail early on attention types the sampler cannot mask
        self._token_text: dict[int, str] = {}
        self.head = LMHead.of(policy.model)  # computed in vocabulary chunks into one reused buffer
        self.compute = ForwardCount()  # every token this sampler ran through the model, and every LM-head row

    # -- public API -----------------------------------------------------------------------------

    def with_config(self, config: SamplingConfig) -> ThoughtSampler:
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

    def _decode(
        self, doc, rows: list[_Row], prefix, span: int, generator, progress, own_len: int, top_k: int = 0
    ) -> None:
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
        with SharedPrefixMode(model, cache):
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
                sampled_logp: dict[int, float] = {}
                if sampling:
                    tokens = self.head.sample(head, cfg.temperature, cfg.top_p, generator)
                    sampled = dict(zip(sampling, tokens.tolist()))
                    sampled_logp = dict(zip(sampling, self.head.sampled_logps(head, tokens, cfg.temperature).tolist()))
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
                            row.logps.append(sampled_logp[b])
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
                want = [
                    b
                    for b, ri in enumerate(active)
                    if self._thinking(rows[ri]) or (rows[ri].thought is not None and not rows[ri].forced)
                ]
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
        with SharedPrefixMode(model, cache), torch.inference_mode():
            hidden = shared_prefix_forward(model, cache, inp, slot_pos, t.clone(), span)
            last = hidden[
                torch.arange(len(rows), device=device), torch.tensor([len(o) - 1 for o in owns], device=device)
            ]
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
            (
                len(r.thought) + close - len(r.forced)
                if r.given
                else budget
                if r.thought is not None
                else len(r.generated)
            )
            + (r.logp == r.logp)  # logp is NaN until scored
            for r in rows
        )

    def _thinking(self, row: _Row) -> bool:
        """Whether the row's next token is to be sampled (an open thought still under its budget)."""
        return row.thought is None and len(row.generated) < self.config.thought_tokens

    def _accept(
        self, row: _Row, token: int, slot_pos: torch.Tensor, next_pos: torch.Tensor, b: int, write: int
    ) -> None:
        """Add a sampled token to a thinking row and stop the thought where `end_of_thought` says."""
        row.generated.append(token)
        end = end_of_thought(
            row.generated,
            self.close_ids,
            self.template.close,
            self.eos_ids,
            self.policy.tokenizer,
            self.config.min_thought_tokens,
            self._text_of,
        )
        if end is None:
            return
        if end.closed_by == "eos":
            # EOS ends the thought; it is not part of it and is never fed
            row.generated.pop()
            row.eos = token
            self._close(row, "eos")
            row.stop = end.stop
            return
        row.thought, row.closed_by, row.stop = end.thought, "marker", end.stop
        if end.stop == self.close_ids:
            # canonical marker: its first c-1 tokens are already in the cache, the last is the next input
            row.generated.pop()
            row.forced.append(self.close_ids[-1])
            return
        # the model wrote the marker with other tokens: keep the thought tokens before it, hide the
        # rest from this row, and feed the canonical marker right after the kept thought
        keep = len(end.thought)
        drop = len(row.generated) - keep - 1  # tokens after the kept ones already written to the cache
        if drop > 0:
            slot_pos[b, write - drop : write] = -1
            next_pos[b] -= drop
        row.hidden = drop
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
            # every sampled token in order: the thought's, then those that ended it (a hidden rewind keeps the order)
            sampled_logps=[] if row.given else list(row.logps[: len(thought) + len(row.stop)]),
        )


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
        with SharedPrefixMode(model, cache), torch.inference_mode():
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
