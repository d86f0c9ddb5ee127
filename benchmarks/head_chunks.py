"""The LM head's matmul, [rows, 640] x [640, C] over Gemma 3's 262,144 columns, by chunk width C and dtype.

    .venv/bin/python benchmarks/head_chunks.py                      # GFLOP/s per (rows, C), fp32 and bf16

`engine/token_sampling.LMHead` computes the head chunk by chunk (the logits of a chunk are reduced while in cache);
this picks the chunk width per dtype (`CHUNK`, `CHUNK_FP32`). Best of 3 passes over all columns, random weights.
"""

from __future__ import annotations

import time

import torch


def main() -> None:
    torch.manual_seed(0)
    from workbench.hardware import cpu_kind

    print(f"# {cpu_kind()}, capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    for dtype in (torch.float32, torch.bfloat16):
        weight = torch.randn(262144, 640).to(dtype)
        for rows in (56, 112, 224):
            hidden = torch.randn(rows, 640).to(dtype)
            cells = []
            for chunk in (1024, 2048, 4096, 8192, 16384):
                out = torch.empty(rows, chunk, dtype=dtype)
                torch.mm(hidden, weight[:chunk].t(), out=out)
                best = float("inf")
                for _ in range(3):
                    start = time.perf_counter()
                    for s in range(0, weight.shape[0], chunk):
                        torch.mm(hidden, weight[s : s + chunk].t(), out=out)
                    best = min(best, time.perf_counter() - start)
                cells.append(f"{chunk}: {2 * rows * 640 * weight.shape[0] / best / 1e9:.0f}")
            print(f"{str(dtype).split('.')[-1]:>8} rows {rows:>3}  GFLOP/s by chunk  " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
