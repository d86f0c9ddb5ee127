"""The two-stage block sampler draws exactly from softmax(logits / T) (and the nucleus for top_p < 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.engine.token_sampling import BLOCK, CHUNK, LMHead, sample_tokens


@pytest.mark.parametrize("vocab", [7, 3 * BLOCK, 3 * BLOCK + 17])
def test_frequencies_match_softmax(vocab):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, vocab, generator=gen) * 2
    logits[0, :5] += 4  # a few likely tokens, and a long tail
    temperature = 0.7
    n = 40_000
    draws = sample_tokens(logits.expand(n, vocab), temperature, 1.0, gen).numpy()
    expected = torch.softmax(logits[0] / temperature, -1).numpy()
    observed = np.bincount(draws, minlength=vocab) / n
    # every probability within 5 standard errors, and total variation small
    se = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(observed - expected) <= 5 * se + 1e-4)
    assert 0.5 * np.abs(observed - expected).sum() < 0.03


def test_greedy_is_argmax():
    logits = torch.randn(5, 1000)
    assert torch.equal(sample_tokens(logits, 0.0), logits.argmax(-1))


def test_top_p_never_leaves_the_nucleus():
    gen = torch.Generator().manual_seed(1)
    probs = torch.tensor([0.5, 0.3, 0.1, 0.05, 0.05])
    logits = torch.log(probs)[None].expand(20_000, 5).contiguous()
    draws = sample_tokens(logits, 1.0, top_p=0.75, generator=gen)
    # tokens 0 and 1 cover 0.8 >= 0.75 (token 1 crosses p and is kept); nothing else may appear
    assert set(draws.tolist()) == {0, 1}
    share0 = (draws == 0).float().mean().item()
    assert share0 == pytest.approx(0.5 / 0.8, abs=0.02)


def test_top_p_beyond_top_k_falls_back_to_full_sort():
    gen = torch.Generator().manual_seed(2)
    logits = torch.zeros(200, 5000)  # uniform: the nucleus at p=0.9 holds 4500 tokens, more than the top-1024
    draws = sample_tokens(logits, 1.0, top_p=0.9, generator=gen)
    assert draws.unique().numel() > 150


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 6), vocab=st.integers(2, 2000), temperature=st.floats(0.05, 3.0), seed=st.integers(0, 999))
def test_samples_are_valid_ids(rows, vocab, temperature, seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=gen).to(torch.bfloat16)
    out = sample_tokens(logits, temperature, 1.0, gen)
    assert out.shape == (rows,)
    assert int(out.min()) >= 0 and int(out.max()) < vocab


# --------------------------------------------------------------------------- the chunked LM head


def _head_with_logits(logits: torch.Tensor) -> LMHead:
    """An LM head whose logits for hidden state [[1.0]] are exactly `logits` (d = 1)."""
    return LMHead(logits[:, None].clone())


def test_chunked_head_equals_plain_linear_with_bias_and_softcap():
    gen = torch.Generator().manual_seed(3)
    vocab, d = 2 * CHUNK + 300, 16  # three chunks, the last one not a whole number of blocks
    weight, bias = torch.randn(vocab, d, generator=gen), torch.randn(vocab, generator=gen)
    hidden = torch.randn(5, d, generator=gen)
    head = LMHead(weight, bias, softcap=30.0)
    expected = torch.tanh(torch.nn.functional.linear(hidden, weight, bias) / 30.0) * 30.0
    out = head.step(hidden, [0, 2], 0.7)
    assert torch.allclose(out.logits, expected, atol=1e-4)
    assert torch.allclose(head.logits(hidden), expected, atol=1e-4)
    assert torch.isinf(out.padded[:, vocab:]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_head_stats_equal_the_full_softmax(dtype):
    """LMHead.stats combines per-chunk maxima, sums and argmaxes; the maximum sits in a different chunk per row."""
    gen = torch.Generator().manual_seed(5)
    vocab, d = 2 * CHUNK + 300, 16
    weight, bias = torch.randn(vocab, d, generator=gen), torch.randn(vocab, generator=gen)
    weight[5, 0], weight[CHUNK + 9, 0], weight[vocab - 1, 0] = 9.0, -9.0, 0.0  # row-dependent winners
    hidden = torch.randn(6, d, generator=gen) * 0.3
    hidden[:, 0] = torch.tensor([3.0, -3.0, 0.0, 3.0, -3.0, 0.0])
    targets = torch.tensor([0, CHUNK + 9, vocab - 1, CHUNK, 5, 2 * CHUNK + 1])
    head = LMHead(weight.to(dtype), bias.to(dtype), softcap=30.0)
    z = head.logits(hidden.to(dtype)).float()
    stats = head.stats(hidden.to(dtype), targets, entropy=True)
    logp = torch.log_softmax(z, -1)
    assert torch.equal(stats.argmax, z.argmax(-1))
    assert len(set(stats.argmax.tolist()) & {5, CHUNK + 9}) == 2, "the winners should lie in different chunks"
    torch.testing.assert_close(stats.target_z, z.gather(-1, targets[:, None])[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(stats.lse, torch.logsumexp(z, -1), atol=1e-4, rtol=0)
    torch.testing.assert_close(stats.mean_z, z.mean(-1), atol=1e-4, rtol=0)
    torch.testing.assert_close(stats.entropy, -(logp.exp() * logp).sum(-1), atol=1e-4, rtol=0)
    assert head.stats(hidden.to(dtype)).target_z is None and head.stats(hidden.to(dtype)).entropy is None


def test_head_step_samples_exactly_across_chunks_with_bans():
    """Stage 1 is taken per chunk and rescaled to the row maximum; the guards' bans renormalise the rest."""
    gen = torch.Generator().manual_seed(4)
    vocab = 2 * CHUNK + 300
    logits = torch.randn(vocab, generator=gen) * 2
    logits[:3] += 5  # likely tokens in the first chunk ...
    logits[CHUNK + 7] += 6  # ... in the second ...
    logits[-2] += 5.5  # ... and in the short last block of the last chunk
    head = _head_with_logits(logits)
    banned = [0, CHUNK + 7]
    temperature, rows, steps = 0.8, 400, 100
    free, guarded = [], []
    for _ in range(steps):
        hidden = torch.ones(rows, 1)
        # rows 0..rows/2-1 sample freely, the others have two likely tokens banned; one row only scores
        sample_rows = list(range(rows - 1))
        out = head.step(hidden, sample_rows, temperature, banned=[(list(range(rows // 2, rows - 1)), banned)])
        draws = head.sample(out, temperature, 1.0, gen)
        free.append(draws[: rows // 2])
        guarded.append(draws[rows // 2 :])
        # the scoring row keeps the model's own distribution, bans or not
        assert LMHead.log_prob(out, rows - 1, 0) == pytest.approx(float(torch.log_softmax(logits, -1)[0]), abs=1e-5)
    for draws, ban in ((torch.cat(free), []), (torch.cat(guarded), banned)):
        target = logits / temperature
        target[ban] = float("-inf")
        expected = torch.softmax(target, -1).numpy()
        observed = np.bincount(draws.numpy(), minlength=vocab) / draws.numel()
        se = np.sqrt(expected * (1 - expected) / draws.numel())
        assert np.all(np.abs(observed - expected) <= 5 * se + 2e-4)
        assert not any(observed[b] for b in ban)
