"""Exact temperature / top-p sampling from a large-vocabulary LM head, fast on CPU.

Why not `torch.multinomial`: on Gemma's 262k vocabulary, softmax + multinomial for 64 rows takes
~400 ms on a 2-core CPU, three times the model's forward pass. We sample exactly from the same
distribution in two stages instead:

1. the exp((x - max)/T) of the logits is summed over blocks of 512 (no probability tensor is kept);
2. a block is drawn in proportion to its sum, then a token inside the block in proportion to its
   weight.

P(token) = P(block) * P(token | block) = softmax(x / T)[token], so this is plain sampling, not an
approximation. With top_p < 1 the nucleus is taken from the top-1024 logits (exact whenever they
hold p of the mass, which is checked; other rows fall back to a full sort).

`LMHead.step` goes one further for the thought sampler's decode loop: it computes the LM head in
vocabulary chunks of 16k columns into one reused buffer and takes each chunk's block sums while the
chunk is still in cache, so the [rows, 262k] logits are written once and never re-read for stage 1
(per chunk the sums are relative to the chunk's own maximum, then rescaled to the row maximum:
exp(x - m_c) * exp(m_c - M) = exp(x - M)). On fp32 CPUs the head is most of a decode step.

No torch.compile here: torch 2.13's inductor miscompiled the fused max/exp/block-sum kernel on some
CPUs (block sums off by 3-9% with dynamic shapes on AVX512, and with static shapes under AVX2 kernels,
found by tests/test_sampling.py), and eager chunks are as fast once they stay in cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench import work

BLOCK = 512
TOP_K_FOR_NUCLEUS = 1024
# LM-head columns per chunk. fp32: 2048 (a [rows, 640] x [640, 2048] matmul ran 13-20 % faster than at 16k columns on
# AVX2 and AVX512, native and emulated, 2026-12-07: the chunk's weights stay in cache); bf16/fp16: 16k (no difference
# measured there, and fewer chunks mean fewer small ops per decode step)
CHUNK = 32 * BLOCK
CHUNK_FP32 = 4 * BLOCK


def _pad_to_block(logits: torch.Tensor) -> torch.Tensor:
    rest = logits.shape[-1] % BLOCK
    if rest == 0:
        return logits
    return torch.nn.functional.pad(logits, (0, BLOCK - rest), value=float("-inf"))


def block_sums(logits: torch.Tensor, inv_temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block sums of exp((x - max) * inv_temperature) over `logits` [rows, k * BLOCK], and the row max."""
    x = logits.float() * inv_temperature
    m = x.amax(-1, keepdim=True)
    e = torch.exp(x - m)
    return e.view(e.shape[0], -1, BLOCK).sum(-1), m


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row with probability proportional to the non-negative `weights` (inverse CDF)."""
    cdf = weights.cumsum(-1)
    u = torch.rand(weights.shape[0], 1, generator=generator, device=weights.device, dtype=cdf.dtype)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return idx.squeeze(-1).clamp_(max=weights.shape[-1] - 1)


def _draw_two_stage(
    padded: torch.Tensor, sums: torch.Tensor, m: torch.Tensor, inv_t: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Stage 2: a block per row in proportion to `sums`, then a token inside it (padded: [rows, k * BLOCK])."""
    block = _draw(sums, generator)
    rows = torch.arange(padded.shape[0], device=padded.device)
    inside = padded.view(padded.shape[0], -1, BLOCK)[rows, block].float()
    weights = torch.exp(inside * inv_t - m)
    return block * BLOCK + _draw(weights, generator)


def sample_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample one token id per row of `logits` [B, V] from softmax(logits / temperature), nucleus `top_p`.

    temperature == 0 means greedy.
    """
    if temperature == 0:
        return logits.argmax(-1)
    vocab = logits.shape[-1]
    padded = _pad_to_block(logits)
    inv_t = 1.0 / temperature
    if top_p >= 1.0:
        sums, m = block_sums(padded, inv_t)
        return _draw_two_stage(padded, sums, m, inv_t, generator).clamp_(max=vocab - 1)
    return _sample_nucleus(padded, inv_t, top_p, generator)


def _sample_nucleus(
    padded: torch.Tensor, inv_t: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    sums, m = block_sums(padded, inv_t)
    total = sums.sum(-1, keepdim=True)
    k = min(TOP_K_FOR_NUCLEUS, padded.shape[-1])
    top_logits, top_ids = torch.topk(padded, k, dim=-1)
    probs = torch.exp(top_logits.float() * inv_t - m) / total
    cum = probs.cumsum(-1)
    # keep every token whose preceding mass is < top_p (the token crossing p is kept, as in HF's top-p)
    keep = (cum - probs) < top_p
    covered = cum[:, -1] >= top_p
    if not bool(covered.all()):
        # the nucleus reaches past the top-k for some rows: sort those rows in full
        for row in torch.nonzero(~covered).flatten().tolist():
            row_probs = torch.exp(padded[row].float() * inv_t - m[row]) / total[row]
            sorted_p, sorted_ids = torch.sort(row_probs, descending=True)
            row_keep = (sorted_p.cumsum(-1) - sorted_p) < top_p
            choice = _draw((sorted_p * row_keep).unsqueeze(0), generator)
            top_ids[row, 0] = sorted_ids[choice]
            keep[row] = False
            keep[row, 0] = True
            probs[row, 0] = 1.0
    idx = _draw(probs * keep, generator)
    return top_ids.gather(-1, idx.unsqueeze(-1)).squeeze(-1)


# --------------------------------------------------------------------------- the LM head, chunked


@dataclass
class HeadStep:
    """One decode step's LM-head output: `logits` [rows, V] (a view of the head's reused buffer, valid until its
    next step) and, for the rows that sample, the stage-1 block sums already taken."""

    logits: torch.Tensor
    sample_rows: torch.Tensor | None  # indices into `logits` of the rows that sample (None: no row samples)
    sums: torch.Tensor | None  # [len(sample_rows), V_padded / BLOCK]
    row_max: torch.Tensor | None  # [len(sample_rows), 1], scaled by 1/T
    padded: torch.Tensor  # [rows, V_padded]: `logits` plus -inf columns up to a whole block


@dataclass
class HeadStats:
    """What a scorer reads from the LM head per row: float32 except `argmax` (int64); None where not asked for."""

    target_z: torch.Tensor | None  # the logit of each row's target token
    lse: torch.Tensor  # logsumexp of the logits
    argmax: torch.Tensor  # the most likely token (the first one on ties, as torch.argmax)
    mean_z: torch.Tensor  # the mean logit over the vocabulary
    entropy: torch.Tensor | None  # entropy of softmax(z), nats
    top_ids: torch.Tensor | None = None  # [rows, k]: the k most likely tokens, most likely first
    top_z: torch.Tensor | None = None  # [rows, k]: their logits (log p = top_z - lse)


class LMHead:
    """A model's output layer (weight [V, d], optional bias, optional final soft-capping), computed in chunks."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, softcap: float | None = None) -> None:
        self.weight, self.bias, self.softcap = weight, bias, softcap
        self.chunk = CHUNK_FP32 if weight.dtype == torch.float32 else CHUNK
        self.vocab = weight.shape[0]
        self.padded_vocab = -(-self.vocab // BLOCK) * BLOCK
        self._buffer: torch.Tensor | None = None

    @classmethod
    def of(cls, model: torch.nn.Module) -> LMHead:
        head = model.get_output_embeddings()
        return cls(head.weight, getattr(head, "bias", None), getattr(model.config, "final_logit_softcapping", None))

    def _chunk(self, hidden: torch.Tensor, start: int, stop: int, out: torch.Tensor) -> None:
        torch.mm(hidden, self.weight[start:stop].t(), out=out)
        if self.bias is not None:
            out += self.bias[start:stop]
        if self.softcap:
            out.div_(self.softcap).tanh_().mul_(self.softcap)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Plain logits [rows, V] in a fresh tensor."""
        work.count_head(hidden.shape[0], self.weight)
        out = torch.empty(hidden.shape[0], self.vocab, dtype=hidden.dtype, device=hidden.device)
        for start in range(0, self.vocab, self.chunk):
            stop = min(start + self.chunk, self.vocab)
            self._chunk(hidden, start, stop, out[:, start:stop])
        return out

    def stats(
        self, hidden: torch.Tensor, targets: torch.Tensor | None = None, entropy: bool = False, top_k: int = 0
    ) -> HeadStats:
        """Per row of `hidden` [rows, d], without keeping the [rows, V] logits: the target's logit, logsumexp, argmax,
        mean logit and (optionally) the entropy of softmax(z) and the `top_k` most likely tokens, in natural units.

        The head runs chunk by chunk into one [rows, chunk] buffer; each chunk gives its max m_c, argmax, sum of
        logits, target logit and S_c = sum exp(z - m_c) (and, for the entropy, W_c = sum exp(z - m_c) z), read while
        the chunk is in cache. Combined with M = max m_c: logsumexp = M + log sum_c exp(m_c - M) S_c and
        entropy = logsumexp - sum_c exp(m_c - M) W_c / sum_c exp(m_c - M) S_c. No fresh [rows, V] tensor means no
        page faults per call (a 134 MB one cost more than its softmax here).
        """
        rows = hidden.shape[0]
        work.count_head(rows, self.weight)
        buf = torch.empty(rows, min(self.chunk, self.vocab), dtype=hidden.dtype, device=hidden.device)
        maxima, sums, weighted, arg_parts, top_parts = [], [], [], [], []
        total = torch.zeros(rows, dtype=torch.float64, device=hidden.device)
        target_z = torch.full((rows,), float("nan"), dtype=torch.float32, device=hidden.device)
        for start in range(0, self.vocab, self.chunk):
            stop = min(start + self.chunk, self.vocab)
            self._chunk(hidden, start, stop, buf[:, : stop - start])
            z = buf[:, : stop - start].float()  # the same tensor in float32; a bf16 chunk gets a float32 copy
            m, arg = z.max(-1)
            maxima.append(m)
            arg_parts.append(arg + start)
            total += z.sum(-1, dtype=torch.float64)
            if targets is not None:
                inside = (targets >= start) & (targets < stop)
                target_z[inside] = z[inside, targets[inside] - start]
            if top_k:
                values, ids = z.topk(min(top_k, stop - start), dim=-1)
                top_parts.append((values, ids + start))
            e = z.sub_(m[:, None]).exp_()  # in place: z is not needed again
            sums.append(e.sum(-1, dtype=torch.float64))
            if entropy:  # sum e*z = sum e*log(e) + m * sum e, and entr(e) = -e*log(e)
                weighted.append(-torch.special.entr(e).sum(-1, dtype=torch.float64) + m.double() * sums[-1])
        m_all = torch.stack(maxima, 1).double()
        top = m_all.argmax(1)
        big_m = m_all.gather(1, top[:, None])
        scale = torch.exp(m_all - big_m)
        norm = (scale * torch.stack(sums, 1)).sum(1)
        lse = big_m[:, 0] + torch.log(norm)
        ent = None
        if entropy:
            ent = (lse - (scale * torch.stack(weighted, 1)).sum(1) / norm).float()
        argmax = torch.stack(arg_parts, 1).gather(1, top[:, None])[:, 0]
        top_ids = top_z = None
        if top_k:  # the overall top k is among the chunks' top k
            values, order = torch.cat([v for v, _ in top_parts], 1).topk(min(top_k, self.vocab), dim=-1)
            top_z, top_ids = values, torch.cat([i for _, i in top_parts], 1).gather(1, order)
        return HeadStats(
            target_z if targets is not None else None,
            lse.float(),
            argmax,
            (total / self.vocab).float(),
            ent,
            top_ids,
            top_z,
        )

    def _rows_buffer(self, rows: int, like: torch.Tensor) -> torch.Tensor:
        """A [rows, V_padded] view of one buffer kept across steps (a fresh 140 MB tensor per step costs page faults)."""
        buf = self._buffer
        if buf is None or buf.shape[0] < rows or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(max(rows, 1), self.padded_vocab, dtype=like.dtype, device=like.device)
            buf[:, self.vocab :] = float("-inf")
            self._buffer = buf
        return buf[:rows]

    def step(
        self,
        hidden: torch.Tensor,
        sample_rows: list[int],
        temperature: float,
        banned: list[tuple[list[int], list[int]]] = (),
    ) -> HeadStep:
        """Logits of every row of `hidden` [rows, d]; for `sample_rows` (with temperature > 0) also their block sums.

        `banned`: (rows, token ids) pairs whose logits are set to -inf first (the sampling guards); only sampling
        rows may be named, so the rows that score keep the model's own distribution."""
        work.count_head(hidden.shape[0], self.weight)
        padded = self._rows_buffer(hidden.shape[0], hidden)
        rows_t = torch.tensor(sample_rows, dtype=torch.long, device=hidden.device) if sample_rows else None
        # stage 1 on every row when most rows sample (the few scoring rows cost less than copying the others out)
        every_row = 2 * len(sample_rows) >= hidden.shape[0]
        fused = rows_t is not None and temperature > 0
        inv_t = 1.0 / temperature if temperature > 0 else 1.0
        bans = [
            (torch.tensor(r, device=hidden.device), torch.tensor(sorted(c), device=hidden.device))
            for r, c in banned
            if r and c
        ]
        sums, maxima = [], []
        with torch.inference_mode():
            for start in range(0, self.padded_vocab, self.chunk):
                stop = min(start + self.chunk, self.padded_vocab)
                chunk = padded[:, start:stop]
                if start < self.vocab:
                    self._chunk(hidden, start, min(stop, self.vocab), chunk[:, : min(stop, self.vocab) - start])
                for ban_rows, ban_cols in bans:
                    inside = ban_cols[(ban_cols >= start) & (ban_cols < stop)] - start
                    if inside.numel():
                        chunk[ban_rows[:, None], inside[None, :]] = float("-inf")
                if fused:
                    x = (chunk if every_row else chunk.index_select(0, rows_t)).float() * inv_t  # a copy: chunk stays
                    m = x.amax(-1, keepdim=True)
                    sums.append(x.sub_(m).exp_().view(x.shape[0], -1, BLOCK).sum(-1))
                    maxima.append(m)
            if not fused:
                return HeadStep(padded[:, : self.vocab], rows_t, None, None, padded)
            m_chunks = torch.cat(maxima, -1)  # [rows, chunks]
            row_max = m_chunks.amax(-1, keepdim=True)
            scale = torch.exp(m_chunks - row_max)
            block_sums_ = torch.cat([s * scale[:, i : i + 1] for i, s in enumerate(sums)], -1)
            if every_row and len(sample_rows) < hidden.shape[0]:
                block_sums_, row_max = block_sums_.index_select(0, rows_t), row_max.index_select(0, rows_t)
        return HeadStep(padded[:, : self.vocab], rows_t, block_sums_, row_max, padded)

    def sample(
        self, out: HeadStep, temperature: float, top_p: float, generator: torch.Generator | None
    ) -> torch.Tensor:
        """One token per sampling row of `out`, exactly from softmax(logits / T) (nucleus `top_p`)."""
        assert out.sample_rows is not None
        with torch.inference_mode():
            if temperature == 0 or top_p < 1.0 or out.sums is None:
                return sample_tokens(out.logits.index_select(0, out.sample_rows), temperature, top_p, generator)
            inv_t = 1.0 / temperature
            block = _draw(out.sums, generator)
            # only the drawn block of each sampling row is read back from the buffer
            inside = out.padded.view(out.padded.shape[0], -1, BLOCK)[out.sample_rows, block].float()
            token = block * BLOCK + _draw(torch.exp(inside * inv_t - out.row_max), generator)
            return token.clamp_(max=self.vocab - 1)

    @staticmethod
    def sampled_logps(out: HeadStep, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
        """log softmax(logits / T)[token] of each sampling row's drawn token: the log-prob of the distribution it was
        drawn from (guards' bans included), at the sampling temperature as the trainer's ratio uses it. With the
        fused stage 1 this is free: logsumexp(z / T) = row_max + log(sum of the block sums). NaN at T = 0."""
        assert out.sample_rows is not None
        with torch.inference_mode():
            if temperature == 0:
                return torch.full(tokens.shape, float("nan"))
            inv_t = 1.0 / temperature
            if out.sums is not None:
                z = out.padded[out.sample_rows, tokens].float() * inv_t
                lse = out.row_max[:, 0] + torch.log(out.sums.sum(-1))
                return (z - lse).float()
            z = out.logits.index_select(0, out.sample_rows).float() * inv_t
            return (z.gather(1, tokens[:, None])[:, 0] - torch.logsumexp(z, -1)).float()

    @staticmethod
    def log_prob(out: HeadStep, row: int, token: int) -> float:
        """log softmax(logits[row])[token], natural log (T = 1: the model's own distribution)."""
        z = out.logits[row].float()
        return float(z[token] - torch.logsumexp(z, -1))

    @staticmethod
    def top_tokens(out: HeadStep, row: int, k: int) -> list[tuple[int, float]]:
        """The k most likely tokens of `row` with their log-probabilities (natural log, T = 1)."""
        z = out.logits[row].float()
        values, ids = z.topk(k)
        return [(int(i), float(v)) for i, v in zip(ids.tolist(), values - torch.logsumexp(z, -1))]
