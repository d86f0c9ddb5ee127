"""The math of an RLP update as small pure functions: advantages, the clipped surrogate, the EMA teacher.

    A_i  = G/(G-1) * (r_i - mean_j r_j)                       (RLOO; no division by the std)
    L    = -1/|batch| sum_i 1/|c_i| sum_j min(rho_ij A_i, clip(rho_ij, 1-eps_low, 1+eps_high) A_i)
    rho_ij = pi_theta(c_ij | ...) / pi_old(c_ij | ...)         (per thought token)
    phi <- tau * phi + (1 - tau) * theta                      (after every optimizer step)

Everything here is tested against hand-computed values in tests/test_rl_math.py.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """G/(G-1) * (r - group mean) for rewards shaped [..., G]; equals r_i minus the mean of the other G-1.

    A group of one has no baseline: its advantage is 0."""
    g = rewards.shape[-1]
    if g < 2:
        return torch.zeros_like(rewards)
    return g / (g - 1) * (rewards - rewards.mean(-1, keepdim=True))


def degenerate_groups(rewards: torch.Tensor) -> torch.Tensor:
    """Per group ([..., G]): all G rewards equal (to float tolerance), so every advantage is 0 and the group teaches
    nothing - how binary designs starve small models (PretrainZero's finding)."""
    r = rewards.double()
    spread = r.max(-1).values - r.min(-1).values
    return spread <= 1e-9 * r.abs().max(-1).values.clamp(min=1.0)


def guarded_advantages(
    rewards: torch.Tensor, empty: torch.Tensor, empty_penalty: float = 0.0, empty_cap: float | None = None
) -> torch.Tensor:
    """RLOO advantages with the two optional empty-thought guards (neither is in the RLP paper).

    empty_penalty: subtracted from the reward of each empty thought before the group mean, so an
    empty thought must beat real thoughts by that margin to be reinforced.
    empty_cap: an empty thought's advantage is clamped to at most this (0: never pushed up)."""
    adv = rloo_advantages(rewards - empty_penalty * empty.to(rewards.dtype))
    if empty_cap is not None:
        adv = torch.where(empty, adv.clamp(max=empty_cap), adv)
    return adv


def shuffled_within_groups(advantages: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The null control's advantages: each group's [G] advantages in a random order of their own. Every group keeps its
    values (the same spread and sizes of update), but which thought gets which value no longer depends on its reward."""
    order = torch.argsort(torch.rand(advantages.shape, generator=generator, dtype=torch.float64), dim=-1)
    return torch.gather(advantages, -1, order)


def clipped_surrogate(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO loss -min(rho A, clip(rho) A) and whether the clip was the active branch.

    All three tensors have the same shape (one entry per thought token; the advantage repeated over
    the tokens of its thought)."""
    ratio = torch.exp(logp_new - logp_old)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    was_clipped = clipped < unclipped  # the min picked the clipped branch: no gradient from this token
    return loss, was_clipped


def normalise_loss(per_token: torch.Tensor, mask: torch.Tensor, mode: str, denominator: float) -> torch.Tensor:
    """Reduce a [rows, tokens] per-token loss under `mask`.

    mode "sequence" (the paper): each thought averaged over its own length, summed over rows, divided
    by `denominator` = the number of thoughts in the whole batch.
    mode "token": summed over every token, divided by `denominator` = the number of thought tokens in
    the whole batch. Passing the whole batch's denominator lets micro-batches add up exactly."""
    mask = mask.to(per_token.dtype)
    if mode == "sequence":
        per_row = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        return per_row.sum() / denominator
    if mode == "token":
        return (per_token * mask).sum() / denominator
    raise ValueError(f"unknown loss normalisation {mode!r}; use 'sequence' or 'token'")


def sampler_gap(delta: torch.Tensor) -> dict[str, float]:
    """How far the sampler's log-probs are from the trainer's, over the sampled tokens: `delta` = log pi_trainer -
    log pi_sampler per token. The update takes rho = 1 at its first epoch (pi_old is the trainer's own); the true
    importance ratio of what was sampled is exp(delta). Its spread is the noise floor of that assumption (a bf16
    rollout copy against fp32 weights with autocast, say). Empty: no metrics."""
    delta = delta.double()
    if delta.numel() == 0:
        return {}
    ratio = torch.exp(delta)
    return {
        "sampler_logp_gap_mean": float(delta.abs().mean()),  # mean |log pi_trainer - log pi_sampler| per token
        "sampler_logp_gap_max": float(delta.abs().max()),
        "sampler_ratio_std": float(ratio.std(unbiased=False)),  # spread of exp(delta) around 1
        "sampler_gap_tokens": float(delta.numel()),
    }


def kl_k3(logp_policy: torch.Tensor, logp_reference: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens (Schulman's k3, as in GRPO)."""
    delta = logp_reference - logp_policy
    return torch.exp(delta) - delta - 1


@torch.no_grad()
def ema_update_(teacher: Iterable[torch.Tensor], policy: Iterable[torch.Tensor], tau: float) -> None:
    """phi <- tau * phi + (1 - tau) * theta, in place, for matching lists of tensors."""
    teacher, policy = list(teacher), list(policy)
    if len(teacher) != len(policy):
        raise ValueError(f"teacher has {len(teacher)} tensors, policy {len(policy)}")
    torch._foreach_lerp_(teacher, [p.detach().to(t.dtype) for p, t in zip(policy, teacher)], 1.0 - tau)


def module_group(name: str) -> str:
    """The coarse group of a weight, by its name: embedding (the input embedding and a tied or separate LM head),
    attention, mlp, norm, or other."""
    if "embed" in name or "lm_head" in name:
        return "embedding"
    if "attn" in name or "attention" in name:
        return "attention"
    if "mlp" in name or "ffn" in name or "feed_forward" in name:
        return "mlp"
    return "norm" if "norm" in name else "other"


@torch.no_grad()
def drift_by_group(teacher: Iterable[torch.Tensor], policy: Iterable[tuple[str, torch.Tensor]]) -> dict[str, float]:
    """`relative_drift` overall ("all") and per `module_group`: which part of the model moved away from the teacher."""
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for t, (name, p) in zip(teacher, policy):
        p = p.detach().float()
        group = module_group(name)
        num[group] = num.get(group, 0.0) + float(torch.linalg.vector_norm(p - t.float()).double() ** 2)
        den[group] = den.get(group, 0.0) + float(torch.linalg.vector_norm(p).double() ** 2)
    total_num, total_den = sum(num.values()), sum(den.values())
    out = {"all": (total_num / total_den) ** 0.5 if total_den > 0 else 0.0}
    out.update({g: (num[g] / den[g]) ** 0.5 if den[g] > 0 else 0.0 for g in sorted(num)})
    return out


def relative_drift(teacher: Iterable[torch.Tensor], policy: Iterable[torch.Tensor]) -> float:
    """||theta - phi|| / ||theta|| over all parameters: how far the teacher lags behind the policy."""
    return drift_by_group(teacher, (("", p) for p in policy))["all"]
