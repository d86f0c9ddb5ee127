"""The warm start: next-token training on documents with their thoughts spliced in, so that a base model learns to
write a short scratchpad after `<think>` and to read it across `</think>` (shared/reference/rewards.md: on the
bundled base models the markers alone cost several nats, so no thought can help before this).

It is the NTP trainer with one change, the token ids it trains on: `data.interleave_thoughts` builds each document as
ids[:t] + open + thought + close + ids[t:] at every thought's answer token t - the very sequence RLP scores when it
samples a thought there. The run directory is a model: `load_model(RUN_DIR)` loads its final weights.
"""

from __future__ import annotations

from collections.abc import Sequence

from workbench.data import MIN_DOC_TOKENS, Document, interleave_thoughts
from workbench.engine.thought import ThoughtTemplate
from workbench.errors import WorkbenchError
from workbench.training.ntp_trainer import NTPTrainer
from workbench.training.warmstart_config import WarmStartConfig


def recipe_thoughts(doc: Document, styles: Sequence[str] | None) -> list[tuple[int, str, str]]:
    """The thoughts a warm-start recipe splices into `doc`: those of `styles` (None: all). A recipe without slips
    reads the answer's correct scratchpad where the corpus wrote a slip - the corpus before slips had a scratchpad
    there, so configs/warmstart.yaml trains on the same sequences as then, bit for bit."""
    kept = [th for th in doc.thoughts if styles is None or th[2] in styles]
    if styles is not None and "slip" not in styles and "scratch" in styles:
        scratch_at = {a: dict(options).get("scratch") for (a, _), options in zip(doc.answers, doc.answer_thoughts)}
        kept = sorted(
            kept
            + [
                (at, scratch_at[at], "scratch")
                for at, _, style in doc.thoughts
                if style == "slip" and scratch_at.get(at)
            ]
        )
    return kept


class WarmStartTrainer(NTPTrainer):
    config: WarmStartConfig
    config_class = WarmStartConfig  # launch.trainer_for picks the trainer by its config's class

    def training_ids(self, docs: list[Document]) -> list[list[int]]:
        cfg = self.config
        template = ThoughtTemplate(cfg.think_open, cfg.think_close)
        open_ids, close_ids = template.open_ids(self.tokenizer), template.close_ids(self.tokenizer)
        ids = [
            interleave_thoughts(
                self.tokenizer,
                d,
                open_ids,
                close_ids,
                cfg.max_doc_tokens,
                train_all=cfg.loss_on == "all",
                read_only=cfg.read_only_styles,
                thoughts=recipe_thoughts(d, cfg.thought_styles),
            )
            for d in docs
        ]
        ids = [x for x in ids if len(x) >= MIN_DOC_TOKENS]
        if not ids:
            raise WorkbenchError(f"train_data: no document has at least {MIN_DOC_TOKENS} tokens")
        if cfg.thought_styles and not any(d.thoughts for d in docs):
            raise WorkbenchError(
                f"train_data {cfg.train_data!r} has no thoughts to splice in (no JSONL 'thoughts' field); "
                "use thinking:train or set thought_styles: []"
            )
        return ids
