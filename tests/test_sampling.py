"""The two-stage block sampler draws exactly from softmax(logits / T) (and the nucleus for top_p < 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.sampling import BLOCK, sample_tokens


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
