"""TRL interop: a registered design as a GRPOTrainer reward function, on the real bundled model."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.data import find_document, tokenize
from workbench.engine.thought import ThoughtTemplate
from workbench.models import teacher_of
from workbench.trl_rewards import cut_thought, grpo_dataset, trl_reward_function

pytestmark = pytest.mark.model


def test_cut_thought_at_eos_and_markers(gemma):
    tok = gemma.tokenizer
    close = ThoughtTemplate().close_ids(tok)
    words = tok.encode(" so x = 3", add_special_tokens=False)
    assert cut_thought(words + close + words, close, "</think>", {1}, tok) == words
    assert cut_thought(words + [1] + words, close, "</think>", {1}, tok) == words
    assert cut_thought(words, close, "</think>", {1}, tok) == words
    # a marker spelled with other tokens: ". " written as "." then " The"
    dot_the = tok.encode(". The end", add_special_tokens=False)
    assert (
        tok.decode(cut_thought(words + dot_the, tok.encode(". ", add_special_tokens=False), ". ", {1}, tok))
        == " so x = 3"
    )


@pytest.mark.slow  # fast tier: a sibling test covers the same code; this one in the full suite
def test_adapter_stops_at_every_end_of_turn_id_and_scales_for_rloo(gemma_fp32):
    """Gemma's <end_of_turn> (106) is not its EOS (1): a completion that writes it ends there, as in the sampler
    (thoughts.stop_token_ids). Tokens after it would otherwise change the scored thought and its reward."""
    from workbench.engine.thought import stop_token_ids

    tok = gemma_fp32.tokenizer
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn != tok.eos_token_id and end_of_turn in stop_token_ids(gemma_fp32)
    doc = find_document("corpus:train#math-01")
    ids = tokenize(tok, doc.text, 60)
    words = tok.encode(" so x = 3", add_special_tokens=False)
    noise = tok.encode(" banana banana banana", add_special_tokens=False)
    teacher = teacher_of(gemma_fp32)
    kwargs = dict(prompts=["unused"] * 2, completions=["", ""], document_ids=[ids] * 2, position=[40, 40])
    plain = trl_reward_function("rlp", gemma_fp32, teacher)
    cut = plain(completion_ids=[words + [end_of_turn] + noise, words], **kwargs)
    assert cut[0] == cut[1]  # the tokens after <end_of_turn> are not part of the thought
    scaled = trl_reward_function("rlp", gemma_fp32, teacher, rloo_G=4)(completion_ids=[words, words + noise], **kwargs)
    both = plain(completion_ids=[words, words + noise], **kwargs)
    np.testing.assert_allclose(scaled, np.array(both) * 4 / 3, rtol=1e-12)


def test_rlp_adapter_matches_the_reward_map(gemma_fp32):
    """The adapter's rlp reward of a given thought equals the workbench's own information gain."""
    from workbench.engine.thought import SamplingConfig
    from workbench.rewards import reward_map

    doc = find_document("corpus:train#math-01")
    ids = tokenize(gemma_fp32.tokenizer, doc.text, 90)
    teacher = teacher_of(gemma_fp32)
    rm = reward_map(gemma_fp32, teacher, ids, "every:30", SamplingConfig(G=2, thought_tokens=5, seed=1))
    reward = trl_reward_function("rlp", gemma_fp32, teacher)
    close = ThoughtTemplate().close_ids(gemma_fp32.tokenizer)
    got = reward(
        prompts=["unused"] * len(rm.thoughts),
        completions=[th.text for th in rm.thoughts],
        completion_ids=[th.ids + close for th in rm.thoughts],
        document_ids=[ids] * len(rm.thoughts),
        position=[th.position for th in rm.thoughts],
    )
    np.testing.assert_allclose(got, rm.rewards, atol=2e-3)


@pytest.mark.slow
def test_one_grpo_trainer_step_on_cpu_with_the_rlp_reward(gemma_fp32, tmp_path):
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from workbench.models import load_model

    policy = load_model("gemma3-270m", dtype="float32")  # its own copy: training changes the weights
    policy.model.requires_grad_(True)  # load_model returns a frozen model for scoring
    teacher = teacher_of(policy, copy_weights=True)
    dataset = grpo_dataset(policy.tokenizer, [find_document("corpus:train#math-01")], "every:60")
    calls = []
    rlp = trl_reward_function("rlp", policy, teacher)

    def recorded(*args, **kwargs):
        rewards = rlp(*args, **kwargs)
        calls.append(rewards)
        return rewards

    recorded.__name__ = "rlp"
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=6,
        max_steps=1,
        learning_rate=1e-5,
        beta=0.0,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        gradient_checkpointing=False,
        bf16=False,
        save_strategy="no",
        temperature=0.7,
    )
    before = next(policy.model.parameters()).detach().clone()
    trainer = GRPOTrainer(
        model=policy.model, processing_class=policy.tokenizer, reward_funcs=[recorded], args=args, train_dataset=dataset
    )
    trainer.train()
    assert calls and all(np.isfinite(calls[0]))
    assert all(r < 50 for r in calls[0])  # log-likelihood ratios, in nats
    after = next(policy.model.parameters()).detach()
    assert not torch.equal(before, after), "one optimizer step must change the policy"
