"""Any registered reward design as a TRL `GRPOTrainer` reward function.

    from trl import GRPOConfig, GRPOTrainer
    from workbench.trl_rewards import grpo_dataset, trl_reward_function

    policy = load_model("gemma3-270m", dtype="float32")
    policy.model.requires_grad_(True)                       # load_model returns a frozen model for scoring
    teacher = teacher_of(policy, copy_weights=True)        # RLP's EMA teacher (update it in a callback)
    G = 8
    reward = trl_reward_function("rlp", policy, teacher, rloo_G=G)  # x G/(G-1): RLOO, exactly
    args = GRPOConfig(num_generations=G, beta=0.0, scale_rewards="none", loss_type="grpo", temperature=0.7, ...)
    trainer = GRPOTrainer(model=policy.model, processing_class=policy.tokenizer, reward_funcs=[reward],
                          train_dataset=grpo_dataset(policy.tokenizer, documents, "every:16"), args=args)

What makes GRPOTrainer compute RLP's update (trl 1.16; each line is a setting, not a default):
    scale_rewards="none"   TRL's advantage is then r - mean r over the G completions of a prompt; its default
                           ("group") divides by the group's standard deviation, which RLP does not.
    rloo_G=G               the RLOO advantage G/(G-1) (r - mean r) has no TRL option; scaling every reward by
                           G/(G-1) (this function's `rloo_G`) gives it exactly.
    loss_type="grpo"       each completion's loss averaged over its own length, then over the batch: RLP's
                           normalisation. TRL's default "dapo" divides by the batch's token count instead (our
                           `loss_normalisation: token`).
    beta=0.0               no KL term (the paper's best setting); the EMA teacher needs its own callback, since
                           `sync_ref_model` refuses beta = 0.
Where TRL still differs: it cuts completions only at EOS while sampling, so tokens sampled after the closing
marker are trained (this reward function ignores them: it cuts at the marker and at every end-of-turn id,
`thoughts.stop_token_ids`); the workbench's own trainer stops the thought at the marker.

Dataset columns (made by `grpo_dataset`):
    prompt        str        the document text before x_t followed by the opening marker (TRL tokenises it)
    document_ids  list[int]  the document's token ids, exactly as the workbench scores them
    position      int        t, the index of the target x_t in document_ids

The reward function rebuilds every scored sequence from ids (document_ids[:t] + open + thought + close),
cutting the completion at the closing marker or EOS, so the score never depends on re-tokenised text. TRL
itself tokenises the text prompt; where that differs from document_ids[:t] + open (the merge across the marker
boundary measured on Gemma), the thought was sampled from a slightly different context than the one it is
scored in. The share of such rows is reported as the metric `workbench/retokenised_prompt_share`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from workbench.data import Document, select_positions, tokenize
from workbench.designs import DESIGNS, DesignInput
from workbench.engine.scorer import no_think_scores, score_continuations
from workbench.engine.thought import SamplingConfig, Thought, ThoughtTemplate, first_end_of_thought, stop_token_ids
from workbench.errors import WorkbenchError
from workbench.models import ModelHandle
from workbench.rewards import RewardMap


def grpo_dataset(
    tokenizer, documents: list[Document], positions: str = "every:16", seed: int = 0, template=ThoughtTemplate()
):
    """A `datasets.Dataset` of (prompt, document_ids, position) rows for GRPOTrainer."""
    from datasets import Dataset

    rows: dict[str, list] = {"prompt": [], "document_ids": [], "position": []}
    for doc in documents:
        ids = tokenize(tokenizer, doc.text)
        skip = 1 if tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id else 0
        for t in select_positions(positions, len(ids), seed=seed):
            rows["prompt"].append(tokenizer.decode(ids[skip:t]) + template.open)
            rows["document_ids"].append(ids)
            rows["position"].append(t)
    return Dataset.from_dict(rows)


def cut_thought(ids: list[int], close_ids: list[int], close_text: str, eos: set[int], tokenizer) -> list[int]:
    """The thought tokens of a completion: up to where `end_of_thought` (the sampler's rule) first ends it."""
    end = first_end_of_thought(list(ids), close_ids, close_text, eos, tokenizer)
    return list(ids) if end is None else end.thought


def trl_reward_function(
    design: str,
    policy: ModelHandle,
    teacher: ModelHandle,
    template: ThoughtTemplate = ThoughtTemplate(),
    rloo_G: int | None = None,
    **options: Any,
) -> Callable[..., list[float]]:
    """A GRPOTrainer reward function computing `design` with the live `policy` and the no-think `teacher`.

    A completion is cut at the closing marker (however spelled) or at any id of `thoughts.stop_token_ids` (EOS and
    every end-of-turn token the tokenizer defines, e.g. Gemma's `<end_of_turn>`). `rloo_G`: GRPOConfig's
    num_generations; rewards are multiplied by G/(G-1), so that TRL's r - mean r (with scale_rewards="none") is RLP's
    leave-one-out advantage."""
    if rloo_G is not None and (not isinstance(rloo_G, int) or rloo_G < 2):
        raise WorkbenchError(f"rloo_G must be the number of generations per prompt (>= 2), got {rloo_G!r}")
    factor = rloo_G / (rloo_G - 1) if rloo_G else 1.0
    if design not in DESIGNS:
        raise WorkbenchError(f"unknown design {design!r}; available: {', '.join(DESIGNS)}")
    tok = policy.tokenizer
    open_ids, close_ids = template.open_ids(tok), template.close_ids(tok)
    eos = set(stop_token_ids(policy))
    fn = DESIGNS[design]

    def reward(prompts, completions, completion_ids, document_ids, position, **kwargs) -> list[float]:
        out = np.zeros(len(completion_ids))
        retokenised = 0
        by_doc: dict[tuple, list[int]] = {}
        for i, ids in enumerate(document_ids):
            by_doc.setdefault(tuple(ids), []).append(i)
        for doc_key, rows in by_doc.items():
            ids = list(doc_key)
            thoughts = []
            for k, i in enumerate(rows):
                t = int(position[i])
                thought = cut_thought(list(completion_ids[i]), close_ids, template.close, eos, tok)
                thoughts.append(
                    Thought(
                        t,
                        k,
                        thought,
                        tok.decode(thought),
                        "trl",
                        ids[:t] + open_ids + thought + close_ids,
                        float("nan"),
                    )
                )
                retokenised += int(list(tok(prompts[i]).input_ids) != ids[:t] + open_ids)
            scores = score_continuations(policy, ids, thoughts, template, n_next=1)
            for th, lp in zip(thoughts, scores.logp):
                th.logp_with_thought = float(lp[0])
            no_think, _ = no_think_scores(teacher, ids)
            positions = sorted({th.position for th in thoughts})
            rm = RewardMap(
                model=policy.label,
                teacher=teacher.label,
                dtype=str(policy.dtype),
                template=template,
                config=SamplingConfig(G=max(1, len(thoughts) // max(1, len(positions)))),
                positions_spec="trl",
                document_ids=ids,
                tokens=[tok.decode([i]) for i in ids],
                no_think=no_think,
                positions=positions,
                thoughts=thoughts,
            )
            rewards = fn(DesignInput(policy, teacher, rm), **options).rewards
            out[rows] = rewards
        if "log_metric" in kwargs and callable(kwargs["log_metric"]):
            kwargs["log_metric"]("workbench/retokenised_prompt_share", retokenised / max(1, len(completion_ids)))
        return [float(r) * factor for r in out]

    reward.__name__ = f"workbench_{design}"
    return reward
