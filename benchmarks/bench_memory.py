"""Activations kept for the backward pass, plain vs ``memory_efficient=True``, per model.

    python benchmarks/bench_memory.py                          # the bench_train models, batch 32, k=36

Counts the bytes of every distinct storage autograd saves during one training-mode forward
(`torch.autograd.graph.saved_tensors_hooks`): deterministic and device-independent, unlike a
process's peak memory, which allocator caching and convolution buffers dominate on CPU.
Prints the ratio efficient / plain per model (lower is better; 1.0 = no saving).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from rksearch.models import build

MODELS = ("ERKNet-6x1 6x1 6x1", "IRKNet-3x1 3x1 3x1", "ERKNet-6x1 6x1 6x1-B", "RKCNN-I-5_5_5")


def saved_bytes(model: nn.Module, batch: int) -> int:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.train()(torch.randn(batch, 3, 32, 32))
    return sum(storages.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--growth-rate", type=int, default=36)
    args = ap.parse_args()
    print(f"saved activations, batch {args.batch_size}, k={args.growth_rate}, 32x32")
    for name in MODELS:
        plain, efficient = (saved_bytes(build(name, memory_efficient=on, k=args.growth_rate), args.batch_size)
                            for on in (False, True))
        print(f"{name:24s} plain {plain / 2**20:7.0f} MiB   memory_efficient {efficient / 2**20:7.0f} MiB   "
              f"ratio {efficient / plain:.2f}x")


if __name__ == "__main__":
    main()
