"""What a thought is, and the rules every sampling backend shares: the thought template (open/close markers), the
sampling settings, a sampled `Thought`, the compute counter, where a thought ends (`end_of_thought`) and which tokens
end the text (`stop_token_ids`). No model code here: the prefix cache, the samplers and the scorer build on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from workbench.errors import WorkbenchError
from workbench.models import ModelHandle


@dataclass(frozen=True)
class ThoughtTemplate:
    """The markers around a thought, inserted as plain text (no new vocabulary).

    RLP's only example uses `<think> ... </think>`.
    """

    open: str = "<think>"
    close: str = "</think>"

    def open_ids(self, tokenizer) -> list[int]:
        return list(tokenizer.encode(self.open, add_special_tokens=False))

    def close_ids(self, tokenizer) -> list[int]:
        return list(tokenizer.encode(self.close, add_special_tokens=False))


@dataclass(frozen=True)
class SamplingConfig:
    """How thoughts are sampled. Defaults follow the RLP paper where it is explicit (temperature 0.7)."""

    G: int = 4  # thoughts per position (paper: 16; 4/8/16/32 score alike)
    thought_tokens: int = 32  # token budget per thought (paper: 2048; the closing marker is appended at the budget)
    temperature: float = 0.7  # paper: 0.7; 0 means greedy
    top_p: float = 1.0  # nucleus; 1.0 samples from the full distribution, as the paper describes
    seed: int = 0  # one generator per call: the same seed, document and positions give the same thoughts
    # guards against the empty-thought collapse (shared/reference/rewards.md, last section)
    allow_eos: bool = True  # False: EOS is never sampled inside a thought (its logit is masked)
    # the closing marker (and EOS) cannot be sampled before this many thought tokens. 0 here, so the views show what
    # an unconstrained model writes, empty thoughts included; the paper's action space is |c| >= 1, which training
    # (RLPConfig.min_thought_tokens) and the held-out evaluation (EvalSettings) use by default
    min_thought_tokens: int = 0

    def validate(self) -> SamplingConfig:
        if not isinstance(self.G, int) or self.G < 1:
            raise WorkbenchError(f"G must be a positive integer (thoughts per position), got {self.G!r}")
        if not isinstance(self.thought_tokens, int) or self.thought_tokens < 0:
            raise WorkbenchError(f"thought_tokens must be an integer >= 0, got {self.thought_tokens!r}")
        if not (self.temperature >= 0 and self.temperature <= 100):
            raise WorkbenchError(f"temperature must be in [0, 100], got {self.temperature!r}")
        if not (0 < self.top_p <= 1):
            raise WorkbenchError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.min_thought_tokens, int) or not 0 <= self.min_thought_tokens <= self.thought_tokens:
            raise WorkbenchError(
                f"min_thought_tokens must be an integer in [0, thought_tokens={self.thought_tokens}], "
                f"got {self.min_thought_tokens!r}"
            )
        return self

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Thought:
    """One sampled thought at one position, with the policy's with-thought score of the target."""

    position: int  # index t of the target x_t in the document ids
    index: int  # 0..G-1 within the position
    ids: list[int]  # thought tokens, markers excluded
    text: str
    closed_by: (
        str  # "marker" (the model closed it), "eos" (the model ended the text), "budget", or "given" (not sampled)
    )
    scored_ids: list[int]  # document_ids[:t] + open + thought + close: exactly what x_t is conditioned on
    logp_with_thought: float  # policy: log p(x_t | scored_ids), natural log
    hidden_tokens: int = 0  # sampled tokens hidden again because they spelled the closing marker differently
    eos_id: int | None = None  # the EOS token the model sampled to end the thought (closed_by == "eos")
    # the tokens the policy itself sampled to end the thought: the canonical closing ids when it wrote them so, the
    # other tokens it spelled the marker with, or [EOS]; [] at the budget or for a given thought (nothing was sampled)
    stop_ids: list[int] = field(default_factory=list)
    # the policy's most likely next tokens after the thought, (id, log p), when the caller asked for them
    next_top: list[tuple[int, float]] = field(default_factory=list)
    # the sampler's log p of each token of ids + stop_ids, at the sampling temperature, from the distribution it drew
    # from (the rollout copy's weights and dtype); [] for a given thought or a backend that does not report them
    sampled_logps: list[float] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.ids)


@dataclass
class ForwardCount:
    """What a piece of code ran through a model: tokens fed (each passes every layer once) and LM-head rows computed.
    The FLOP estimate of `workbench.training.flops` turns the two into FLOPs; counting them where the forwards happen keeps
    the compute accounting auditable."""

    tokens: int = 0
    head_rows: int = 0

    def add(self, tokens: int, head_rows: int) -> None:
        self.tokens += int(tokens)
        self.head_rows += int(head_rows)

    def take(self) -> tuple[int, int]:
        """(tokens, head rows) so far, and reset to zero."""
        out = (self.tokens, self.head_rows)
        self.tokens = self.head_rows = 0
        return out


def thought_before_marker(ids: list[int], close: str, tokenizer) -> list[int] | None:
    """If the decoded `ids` contain the closing marker text, the longest prefix of `ids` whose text ends
    before the marker starts; else None. (For markers the model spells with other tokens than the canonical ones.)"""
    text = tokenizer.decode(ids)
    cut = text.find(close)
    if cut < 0:
        return None
    keep = len(ids)
    while keep > 0 and len(tokenizer.decode(ids[:keep])) > cut:
        keep -= 1
    return list(ids[:keep])


@dataclass(frozen=True)
class ThoughtEnd:
    """How a thought ended: its tokens, what closed it ("eos" or "marker") and the sampled tokens that did (the EOS id,
    or the closing marker as the model spelled it: the canonical ids or others whose text contains it)."""

    thought: list[int]
    closed_by: str
    stop: list[int]


def end_of_thought(
    generated: list[int],
    close_ids: list[int],
    close_text: str,
    eos_ids: set[int] | list[int],
    tokenizer,
    min_tokens: int = 0,
    token_text: Callable[[int], str] | None = None,
) -> ThoughtEnd | None:
    """Where a thought ends: the one rule of every sampling backend and of the TRL adapter. `generated` is what was
    sampled after the opening marker, its last token just now; None while the thought goes on.

    - EOS (any of `eos_ids`) ends it; the EOS is not part of the thought;
    - the canonical closing marker (`close_ids`) ends it;
    - so does the marker's text spelled with other tokens (`... So 6.</` + `think>`): the thought keeps the tokens
      whose text ends before the marker starts - unless that leaves fewer than `min_tokens`, when the marker's text
      stays part of the thought. Decoding is skipped unless the last token can finish the marker's text;
      `token_text` (token -> its text) lets a caller cache that lookup."""
    token = generated[-1]
    if token in eos_ids:
        return ThoughtEnd(list(generated[:-1]), "eos", [token])
    c = len(close_ids)
    if list(generated[-c:]) == list(close_ids):
        return ThoughtEnd(list(generated[:-c]), "marker", list(close_ids))
    text = token_text(token) if token_text is not None else tokenizer.decode([token])
    if close_text[-1] not in text:
        return None
    kept = thought_before_marker(generated, close_text, tokenizer)
    if kept is None or len(kept) < min_tokens:
        return None
    return ThoughtEnd(kept, "marker", list(generated[len(kept) :]))


def first_end_of_thought(
    ids: list[int], close_ids: list[int], close_text: str, eos_ids: set[int] | list[int], tokenizer, min_tokens: int = 0
) -> ThoughtEnd | None:
    """`end_of_thought` applied token by token to a finished completion: where its thought ended first (None: it
    ran to its budget)."""
    for stop in range(1, len(ids) + 1):
        end = end_of_thought(ids[:stop], close_ids, close_text, eos_ids, tokenizer, min_tokens)
        if end is not None:
            return end
    return None


END_OF_TURN_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>")


def stop_token_ids(policy: ModelHandle) -> list[int]:
    """The ids that end a thought other than the closing marker: every EOS id the model's generation config, model
    config and tokenizer name, plus the end-of-turn tokens the tokenizer defines (Gemma's `<end_of_turn>` is not
    its EOS; SmolLM2's `<|im_end|>` is). The one rule for "the model ended the text" - the sampler, the vLLM
    backend and the TRL adapter all read it."""
    ids: list[int] = []
    for source in (getattr(policy.model, "generation_config", None), policy.model.config, policy.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if value is None:
            continue
        ids.extend(value if isinstance(value, (list, tuple)) else [value])
    tok = policy.tokenizer
    # the special and added tokens only: the whole vocabulary (get_vocab, 262k entries on Gemma) cost ~0.3 s a call
    special = set(getattr(tok, "all_special_tokens", [])) | set(getattr(tok, "added_tokens_encoder", {}) or {})
    for name in END_OF_TURN_TOKENS:
        if (
            name in special
            and (i := tok.convert_tokens_to_ids(name)) is not None
            and tok.convert_ids_to_tokens(i) == name
        ):
            ids.append(i)
    return sorted(set(int(i) for i in ids))
