"""A model directory with a real model's architecture and tokenizer and *random* weights, for timing.

    python benchmarks/random_model.py SOURCE_DIR OUT_DIR [--seed 0]

SOURCE_DIR needs config.json and the tokenizer files (tokenizer.json may be xz-compressed as
tokenizer.json.xz); weights are not read. Why: the device machines lent to this project reach no
network and take at most 64 MiB of files per call, so real weights (540 MB for Gemma 3 270M in bf16)
cannot get there. Costs per token depend on shapes, not on weight values, with one exception the
benchmarks report: random weights almost never sample the closing marker, so every thought runs to
its budget. Never read rewards or thought lengths off such a model.
"""

from __future__ import annotations

import argparse
import lzma
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "generation_config.json",
)


def make_random_model(source: Path, out: Path, seed: int = 0) -> Path:
    config = AutoConfig.from_pretrained(source)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, out / name)
        elif (source / f"{name}.xz").exists():
            (out / name).write_bytes(lzma.decompress((source / f"{name}.xz").read_bytes()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(make_random_model(args.source, args.out, args.seed))


if __name__ == "__main__":
    main()
