"""RLPConfig: the RLP trainer's settings. Defaults follow the paper where it is explicit."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import WorkbenchError
from workbench.training.config import TrainConfig, check_int, help_field

CONTROLS = ("", "shuffled_advantages")  # "": RLP itself


@dataclass
class RLPConfig(TrainConfig):
    trainer: str = help_field("rlp", "Which trainer: rlp.")
    run_name: str = help_field("rlp", "Name of the run; the run directory is runs/<run_name>-<UTC time>.")

    # -- contexts and thoughts -------------------------------------------------------------------
    docs_per_step: int = help_field(2, "Documents drawn per step; contexts are prefixes of these documents.")
    positions_per_doc: int = help_field(
        4,
        "Positions t drawn uniformly per document per step (contexts = docs x positions). Paper: 512 contexts per step.",
    )
    train_positions: str = help_field(
        "uniform",
        "Where thoughts are sampled: 'uniform' (positions_per_doc drawn from every t >= min_position) or "
        "'marked' (drawn from the documents' marked answer tokens, e.g. thinking:train).",
    )
    min_position: int = help_field(8, "Smallest target index t, so every context has some text before the thought.")
    G: int = help_field(4, "Thoughts per context. Paper: 16 (4/8/16/32 score alike).")
    thought_tokens: int = help_field(
        32, "Token budget of a thought; the closing marker is appended at the budget. Paper: 2048."
    )
    temperature: float = help_field(0.7, "Sampling temperature of thoughts. Paper: 0.7.")
    top_p: float = help_field(1.0, "Nucleus of thought sampling. Paper: full distribution (1.0).")
    sampler_backend: str = help_field(
        "transformers",
        "Who samples thoughts: 'transformers' (the shared-prefix sampler) or 'vllm' (a vLLM engine in this process; "
        "the policy's weights are pushed into it after every optimizer step). Scoring stays on transformers.",
    )
    vllm_gpu_memory_utilization: float = help_field(
        0.3, "vLLM backend on a GPU: share of GPU memory its engine may take."
    )
    vllm_max_model_len: int = help_field(4096, "vLLM backend: longest context + thought the engine is built for.")

    # -- reward and teacher ----------------------------------------------------------------------
    reward_design: str = help_field(
        "rlp",
        "Which reward trains the thoughts: rlp (the paper's information gain), or any registered design - quiet_star, "
        "vr_cli, vr_cli_live, nover, intuitor, rpt, pretrainzero, rlpt or your own (workbench/designs.py). Everything "
        "else stays the same: sampler, RLOO advantages, loss, guards, checkpoints, evaluation.",
    )
    design_options: dict = help_field({}, "Keyword options of the reward design (e.g. {segment: 8} for nover).")
    control: str = help_field(
        "",
        "A null control instead of RLP's signal: 'shuffled_advantages' permutes the advantages within each group "
        "at every step (a permutation of the step's seed), so sampling, rewards and the size of every update stay and "
        "only the link between a thought and its reward is gone. If the control's end task falls as far as RLP's, "
        "update noise is the cause, not the reward. Labelled a control in run.json. '' (default): no control.",
    )
    style_margin_check: int = help_field(
        0,
        "Before the first step, sample the model's own thoughts (G 4, eval_thought_tokens) at the answers of this many "
        "held-out worksheets of eval_data and refuse to train unless its scratchpads out-earn its restatements by more "
        "than 2 SE (thinking_ready.style_margin): where they do not, the RLOO advantages push towards restatements. "
        "About a minute per 8 worksheets on 2 CPU cores. 0 (default): no check. Changes no number of a run it allows.",
    )
    ema_tau: float = help_field(
        0.999, "EMA teacher decay: phi <- tau*phi + (1-tau)*theta after every optimizer step. Paper: 0.999."
    )

    # -- loss --------------------------------------------------------------------------------------
    eps_low: float = help_field(0.2, "Clip range below 1 of the per-token ratio (the paper gives no value).")
    eps_high: float = help_field(0.2, "Clip range above 1 of the per-token ratio (the paper gives no value).")
    share_prefix_in_loss: bool = help_field(
        True,
        "Loss pass: run each document's prefix once for all its thoughts (one packed sequence, a mask per "
        "thought; the same log-probs and gradients as one row per thought, up to float rounding). Needs sdpa or "
        "eager attention; otherwise one row per thought.",
    )
    ppo_epochs: int = help_field(
        1,
        "Optimizer steps per batch of thoughts. With 1 the ratio is exactly 1 and clipping never acts; the paper does not say.",
    )
    beta: float = help_field(
        0.0,
        "KL penalty (k3 estimator on thought tokens) towards the EMA teacher: a variant. The paper's KL ablation "
        "(beta 1e-4 and 1e-3, both below beta 0) regularised towards a fixed reference model instead.",
    )
    ntp_coef: float = help_field(
        0.0, "Weight of an added next-token loss on the step's documents (ablation; paper: none)."
    )
    train_stop_tokens: bool = help_field(
        True,
        "Also train the tokens the policy sampled to end its thought (the closing marker it wrote, or EOS). "
        "They are the policy's actions; the paper does not say. Forced markers (budget) are never trained.",
    )

    # -- guards against the empty-thought collapse (issue 6; all off = the paper's setting) --------
    loss_normalisation: str = help_field(
        "sequence",
        "'sequence' (paper): each thought's loss averaged over its own length, then over the batch - a 1-token "
        "empty thought weighs as much as a 32-token one. 'token': every thought token weighs the same.",
    )
    allow_eos_in_thought: bool = help_field(
        True,
        "False masks EOS while sampling a thought (the paper's thoughts end with the closing marker; it does not discuss EOS).",
    )
    min_thought_tokens: int = help_field(
        1,
        "The closing marker and EOS cannot be sampled before this many thought tokens. 1 is the paper's action "
        "space (Algorithm 1 samples |c| >= 1). 0 allows the empty thought: a deviation from the paper, the door to the "
        "empty-thought collapse; more than 1 is a guard (not in the paper).",
    )
    empty_thought_penalty: float = help_field(
        0.0,
        "Subtracted from the reward of an empty thought (no tokens before its end) before advantages (not in the paper).",
    )
    empty_advantage_cap: float | None = help_field(
        None, "If set, an empty thought's advantage is at most this (e.g. 0: never reinforced). Not in the paper."
    )
    collapse_warning: float = help_field(0.5, "Warn when this share of a step's thoughts are empty.")

    @property
    def deviations(self) -> list[str]:
        """Where this config departs from the paper's explicit settings (recorded in run.json)."""
        out = []
        if self.min_thought_tokens == 0:
            out.append("min_thought_tokens 0: the empty thought is allowed (the paper samples |c| >= 1)")
        if self.reward_design != "rlp":
            out.append(f"reward_design {self.reward_design}: not RLP's information gain")
        elif self.design_options:
            out.append(f"reward_design rlp with options {self.design_options}: a variant of RLP's information gain")
        if self.guarded:
            out.append("collapse guards on (not in the paper)")
        if self.control:
            out.append(f"control {self.control}: a null control (advantages permuted within each group), not RLP")
        if not self.train_embeddings:
            out.append("train_embeddings false: the token embedding and LM head frozen (the paper trains every weight)")
        if self.loss_normalisation == "token":
            out.append("loss_normalisation token: every thought token weighs the same (the paper averages per thought)")
        if self.peft:
            out.append(f"peft: LoRA adapters (r {self.peft['r']}) instead of every weight (the paper trains all)")
        if self.beta > 0:
            out.append("beta > 0: a KL term towards the EMA teacher (the paper's best setting has none)")
        if self.ntp_coef > 0:
            out.append("ntp_coef > 0: a next-token loss term (the paper has none)")
        return out

    def validate(self) -> RLPConfig:
        super().validate()
        from workbench.designs import DESIGNS

        if self.control not in CONTROLS:
            raise WorkbenchError(f"control must be one of {', '.join(repr(c) for c in CONTROLS)}, got {self.control!r}")
        if self.peft and self.sampler_backend == "vllm":
            raise WorkbenchError(
                "peft: the vLLM sampler takes whole weights; RLP on a LoRA adapter samples with "
                "sampler_backend 'transformers' (or drop peft)"
            )

        if self.reward_design not in DESIGNS:
            raise WorkbenchError(f"reward_design must be one of {', '.join(DESIGNS)}, got {self.reward_design!r}")
        if not isinstance(self.design_options, dict):
            raise WorkbenchError(f"design_options must be a mapping, got {self.design_options!r}")
        check_design_options(self.reward_design, DESIGNS[self.reward_design], self.design_options)
        for name, minimum in (
            ("docs_per_step", 1),
            ("positions_per_doc", 1),
            ("min_position", 1),
            ("G", 2),
            ("thought_tokens", 1),
            ("ppo_epochs", 1),
            ("min_thought_tokens", 0),
        ):
            check_int(self, name, minimum)
        if self.train_positions not in ("uniform", "marked"):
            raise WorkbenchError(f"train_positions must be 'uniform' or 'marked', got {self.train_positions!r}")
        if self.min_thought_tokens > self.thought_tokens:
            raise WorkbenchError("min_thought_tokens must not exceed thought_tokens")
        if not 0 < self.ema_tau <= 1:
            raise WorkbenchError(f"ema_tau must be in (0, 1], got {self.ema_tau!r}")
        if not (self.eps_low >= 0 and self.eps_high >= 0 and self.eps_low < 1):
            raise WorkbenchError("eps_low must be in [0, 1) and eps_high >= 0")
        if self.loss_normalisation not in ("sequence", "token"):
            raise WorkbenchError(f"loss_normalisation must be 'sequence' or 'token', got {self.loss_normalisation!r}")
        if self.beta < 0 or self.ntp_coef < 0 or self.empty_thought_penalty < 0:
            raise WorkbenchError("beta, ntp_coef and empty_thought_penalty must be >= 0")
        if not (self.temperature >= 0 and 0 < self.top_p <= 1):
            raise WorkbenchError("temperature must be >= 0 and top_p in (0, 1]")
        if self.sampler_backend not in ("transformers", "vllm"):
            raise WorkbenchError(f"sampler_backend must be 'transformers' or 'vllm', got {self.sampler_backend!r}")
        if self.sampler_backend == "vllm":
            from workbench.engine.vllm_backend import vllm_unavailable

            if reason := vllm_unavailable():
                raise WorkbenchError(f"sampler_backend 'vllm': {reason}")
        return self

    @property
    def guarded(self) -> bool:
        """Any guard against the empty-thought collapse on (a guard goes beyond the paper)."""
        return (
            self.loss_normalisation != "sequence"
            or not self.allow_eos_in_thought
            or self.min_thought_tokens > 1
            or self.empty_thought_penalty > 0
            or self.empty_advantage_cap is not None
        )


NUMBER_ANNOTATIONS = ("float", "int", "float | None", "int | None")


def check_design_options(design: str, fn, options: dict) -> None:
    """Before any model loads: every option is a keyword of the design function, and a number where it takes one
    (a typo or a string there would otherwise stop the run at its first step)."""
    import inspect

    params = dict(list(inspect.signature(fn).parameters.items())[1:])  # the first is the DesignInput
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise WorkbenchError(
            f"reward_design {design} has no option {', '.join(unknown)}; its options: {', '.join(params) or 'none'}"
        )
    for name, value in options.items():
        numeric = str(params[name].annotation) in NUMBER_ANNOTATIONS
        if (
            numeric
            and (isinstance(value, bool) or not isinstance(value, (int, float)))
            and not (value is None and "None" in str(params[name].annotation))
        ):
            raise WorkbenchError(f"design_options {name} of {design} must be a number, got {value!r}")
