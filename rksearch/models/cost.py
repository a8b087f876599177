"""Params, FLOPs, MACs and training memory of a model, fast enough to price a whole search space.

Convention (docs/models.md, "Counting"): params are all trainable parameters, BN affine
included; FLOPs = 2 x multiply-accumulates of conv and linear layers for one image at the data
set's input size (BN, ReLU, pooling, additions not counted) — what
`torch.utils.flop_counter.FlopCounterMode` reports.

`training_memory` estimates what one training step at a batch size holds (`Memory`): weights,
gradients, SGD's momentum buffer and the activations autograd keeps for the backward pass, so
that a trial too big for its worker is skipped before it trains instead of being killed.

A spec whose family counts in closed form (`Family.tally`: the RKCNNs, with `tally`) is priced
without building it (microseconds a spec, cached by value); any other spec (the baselines) and
any module is traced once on the meta device, so nothing is allocated.
`tests/test_cost.py` checks that both agree on hundreds of random specs, and that the closed-form
activations equal, byte for byte, what `torch.autograd.graph.saved_tensors_hooks` sees.

    python -m rksearch.cost "ERKNet-6x1 6x1 6x1" --growth-rate 36 --dataset cifar10 --json
    python -m rksearch.cost "ERKNet-6x1 6x1 6x1" --growth-rate 36 --batch-size 64   # + memory
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.flop_counter import FlopCounterMode

from rksearch.models.layers import running_stats_frozen
from rksearch.models.registry import ModelSpec, build, family_of, model_spec
from rksearch.models.spec import ArchSpec

#: bytes of a float32, the precision every memory figure here assumes (see `Memory` on AMP)
FLOAT32 = 4


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int
    macs: int

    def __str__(self) -> str:
        return f"{self.params / 1e6:.2f}M params, {self.flops / 1e9:.2f} GFLOPs"


@dataclass(frozen=True)
class Memory:
    """Bytes that training a model on one batch holds, float32 throughout.

    parameters   the model's tensors: trainable weights and BN running statistics
    gradients    one float per trainable weight that a gradient reaches
    optimizer    SGD's momentum buffer, one float per such weight (the optimiser of
                 `rksearch.training.loop`; 0 when momentum is off)
    activations  every tensor autograd keeps for the backward pass during one training-mode
                 forward of the batch (the batch itself, concatenations, BN inputs, ReLU
                 outputs, dropout masks, pooling indices) and BN's per-batch statistics;
                 each storage once, the weights (already in `parameters`) excluded
    total        their sum

    `total` adds them up as if all were alive at once: the backward pass starts with every
    activation held and writes the gradients as it frees them.  Left out is what PyTorch
    allocates on the side: the backward pass's gradients of the activations, convolution
    workspaces, the allocator's cache, a CUDA context, the libraries and the data set.  On CPU a
    first training step was measured to grow a process by 1.1-1.5x ``total - parameters``, in a
    process holding about 1 GB before it, so `total` is the least a trial needs, not a bound.

    Under AMP (``runtime.amp`` bf16/fp16, the default on CUDA) the weights, gradients and
    momentum stay float32 but most activations are half precision, about halving
    `activations` (autocast adds a half-precision copy of the weights); with
    ``runtime.memory_efficient`` the dense concatenations are recomputed in the backward pass
    instead of kept, so there the figure is an upper bound.
    """

    parameters: int
    gradients: int
    optimizer: int
    activations: int
    total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", self.parameters + self.gradients + self.optimizer + self.activations)

    def __str__(self) -> str:
        return f"{human_bytes(self.total)} to train ({human_bytes(self.activations)} activations)"


def human_bytes(n: float, compact: bool = False) -> str:
    """``'21.3 GB'`` (``'21.3G'`` when compact): decimal units, as budgets are written (4G = 4e9 bytes)."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            n, unit = n / scale, prefix
            break
    else:
        unit = ""
    number = f"{n:.1f}" if unit else f"{n:.0f}"
    return f"{number}{unit}" if compact else f"{number} {unit}B"


def count(obj: ModelSpec | str | nn.Module, image_size: int | None = None, **knobs: Any) -> Cost:
    """Cost of a spec, a model name (plus knobs, e.g. k=36, dataset="cifar10") or a module.

    `image_size` defaults to the input size the model is made for (`default_image_size`: 32
    for CIFAR-sized models, 224 for ImageNet ones; 32 for a module).
    """
    if isinstance(obj, nn.Module):
        return trace(obj, image_size or 32)
    spec = model_spec(obj, **knobs)
    size = image_size or spec.default_image_size
    return closed_form(spec, size) if family_of(spec).tally else _traced(spec, size)


def training_memory(obj: ModelSpec | str | nn.Module, batch_size: int, image_size: int | None = None, *,
                    momentum: bool = True, **knobs: Any) -> Memory:
    """`Memory` to train a spec, a model name (plus knobs) or a module on batches of `batch_size`.

    `image_size` defaults as in `count`.  `momentum`: whether SGD keeps a momentum buffer
    (the training loop's does unless ``optim.momentum`` is 0).  Counted in closed form where
    the family has one, else by `trace_memory`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if isinstance(obj, nn.Module):
        return trace_memory(obj, batch_size, image_size or 32, momentum=momentum)
    spec = model_spec(obj, **knobs)
    size = image_size or spec.default_image_size
    closed = family_of(spec).tally
    if closed is not None:
        return closed(spec, size).memory(batch_size, momentum)
    return _traced_memory(spec, size, batch_size, momentum)


def trace(model: nn.Module, image_size: int = 32, in_channels: int = 3) -> Cost:
    """Count by running the model once under FlopCounterMode (on meta tensors when it lives there)."""
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_channels, image_size, image_size, device=device))
    finally:
        model.train(was_training)
    flops = int(counter.get_total_flops())
    return Cost(params=params, flops=flops, macs=flops // 2)


@lru_cache(maxsize=256)
def _traced(spec: ModelSpec, image_size: int) -> Cost:
    with torch.device("meta"):
        model = build(spec)
    return trace(model, image_size)


def trace_memory(model: nn.Module, batch_size: int, image_size: int = 32, in_channels: int = 3, *,
                 momentum: bool = True) -> Memory:
    """`Memory` measured by running one training-mode forward of a batch (on meta tensors when
    the model lives there, so nothing is allocated).

    Activations are the bytes of every distinct storage that
    `torch.autograd.graph.saved_tensors_hooks` sees and that is still held when the forward
    ends (a branch whose result the forward drops frees what it saved), less the model's own
    parameters and buffers; the model's BN running statistics are left as they were.
    """
    weights = sum(p.numel() for p in model.parameters() if p.requires_grad) * FLOAT32
    saved: list[weakref.ref[torch.Tensor]] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        # an alias without grad_fn: handing back the tensor itself would tie a saved output to its
        # own graph node in a reference cycle and keep dropped branches alive
        alias = tensor.detach()
        saved.append(weakref.ref(alias))
        return alias

    device = next(model.parameters()).device
    was_training = model.training
    try:
        with torch.enable_grad(), running_stats_frozen(model), torch.autograd.graph.saved_tensors_hooks(pack, _same):
            output = model.train()(torch.zeros(batch_size, in_channels, image_size, image_size, device=device))
        state = {StorageWeakRef(t.untyped_storage()) for t in [*model.parameters(), *model.buffers()]}
        held = {StorageWeakRef(t.untyped_storage()): t.untyped_storage().nbytes()
                for t in (ref() for ref in saved) if t is not None}
        del output
    finally:
        model.train(was_training)
    activations = sum(nbytes for storage, nbytes in held.items() if storage not in state)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return Memory(parameters=weights + buffers, gradients=weights, optimizer=weights if momentum else 0,
                  activations=activations)


@lru_cache(maxsize=256)
def _traced_memory(spec: ModelSpec, image_size: int, batch_size: int, momentum: bool) -> Memory:
    with torch.device("meta"):
        model = build(spec)
    return trace_memory(model, batch_size, image_size, momentum=momentum)


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


# ---- closed form -------------------------------------------------------------------
class Tally:
    """Walks a spec layer by layer, as `RKCNN` builds and runs it, accumulating its counts.

    params and MACs: each weight once, each application of it.  Memory: the bytes of BN
    running statistics, and what autograd saves for backward in a training-mode forward
    (`RKCNN` on CPU, float32): per image, the feature maps a layer keeps (`keep`), and per
    batch, whatever does not grow with it (BN's batch statistics, concatenated clique
    kernels).  Each saved storage is counted once, by the layer that first keeps it.
    """

    def __init__(self, dropout: bool = False) -> None:
        self.dropout = dropout
        self.params = 0
        self.macs = 0
        self.idle_params = 0  # weights that get no gradient, hence no gradient or momentum memory
        self.buffer_bytes = 0
        self.saved_per_image = 0
        self.saved_per_batch = 0

    def conv(self, cin: int, cout: int, kernel: int, hw: int, uses: int = 1, kept: int | None = None,
             dropout: bool = True) -> None:
        """A conv applied `uses` times and, in a model with dropout, the mask of the dropout after
        it (a float per output on CPU) for each of the `kept` uses (default: all) whose saved
        tensors the forward keeps.  Every conv but the stem's has that dropout."""
        weights = cin * cout * kernel * kernel
        self.params += weights
        self.macs += weights * hw * uses
        if dropout and self.dropout:
            self.keep(cout, hw, uses if kept is None else kept)

    def bn(self, channels: int, kept: int = 1) -> None:
        """A BN: affine params, running mean/var (+ an int64 batch count), and the batch mean and
        inverse std of each of its `kept` applications."""
        self.params += 2 * channels
        self.buffer_bytes += 2 * channels * FLOAT32 + 8
        self.saved_per_batch += 2 * channels * FLOAT32 * kept

    def linear(self, cin: int, cout: int) -> None:
        """A linear layer; its input (one vector per image) is kept."""
        self.params += cin * cout + cout
        self.macs += cin * cout
        self.keep(cin)

    def keep(self, channels: int, hw: int = 1, uses: int = 1, itemsize: int = FLOAT32) -> None:
        """A feature map that autograd saves: `channels` x `hw` values per image, each use."""
        self.saved_per_image += channels * hw * uses * itemsize

    def growth(self, cin: int, cout: int, width: int | None, hw: int, uses: int = 1, kept: int | None = None) -> None:
        """GrowthLayer: [BN-ReLU-1x1 -> width] BN-ReLU-3x3 -> cout, applied `uses` times.

        Each of the `kept` uses (default: all) whose result the forward does not drop keeps its
        input (the concatenation, or y itself for a layer reading y alone) and each BN-ReLU
        output (ReLU runs in place, so one tensor serves ReLU and the next conv).
        """
        kept = uses if kept is None else kept
        params_before = self.params
        self.bn(cin, kept)
        self.keep(2 * cin, hw, kept)
        if width:
            self.conv(cin, width, 1, hw, uses, kept)
            self.bn(width, kept)
            self.keep(2 * width, hw, kept)
            cin = width
        self.conv(cin, cout, 3, hw, uses, kept)
        if kept == 0:  # no gradient reaches a layer whose every result is dropped
            self.idle_params += self.params - params_before

    @property
    def cost(self) -> Cost:
        return Cost(params=self.params, flops=2 * self.macs, macs=self.macs)

    def memory(self, batch_size: int, momentum: bool) -> Memory:
        trained = (self.params - self.idle_params) * FLOAT32
        return Memory(parameters=self.params * FLOAT32 + self.buffer_bytes, gradients=trained,
                      optimizer=trained if momentum else 0,
                      activations=batch_size * self.saved_per_image + self.saved_per_batch)


@lru_cache(maxsize=65536)
def closed_form(spec: ModelSpec, image_size: int) -> Cost:
    """Exact params/FLOPs/MACs of a spec whose family counts in closed form, without building it."""
    closed = family_of(spec).tally
    if closed is None:
        raise ValueError(f"{spec.name}: its family has no closed form; use count() to trace it")
    return closed(spec, image_size).cost


def tally(spec: ArchSpec, image_size: int) -> Tally:
    """One walk of an RKCNN spec at `image_size`, as `RKCNN` builds and runs it layer by layer:
    about 0.1 ms (`closed_form` caches the costs it gives)."""
    t = Tally(dropout=spec.dropout > 0)
    channels = spec.channels
    size = image_size
    t.keep(3, size * size)  # the input batch, saved by the stem's conv
    if spec.stem == "cifar":
        t.conv(3, channels[0], 3, size * size, dropout=False)
    else:
        size = (size + 2 * 3 - 7) // 2 + 1
        t.conv(3, channels[0], 7, size * size, dropout=False)
        t.bn(channels[0])
        t.keep(2 * channels[0], size * size)  # BN input, BN-ReLU output (the max-pool's input)
        size = (size + 2 * 1 - 3) // 2 + 1
        t.keep(channels[0], size * size, itemsize=8)  # the max-pool's int64 indices
    sizes = []
    for d in range(spec.periods):
        hw = size * size
        sizes.append(hw)
        for _ in range(spec.steps[d]):
            _time_step(t, spec, d, hw)
        t.keep(channels[d], hw)  # the period's state, saved by the BN of its transition or head
        if d + 1 < spec.periods:
            t.bn(channels[d])
            t.keep(channels[d], hw)  # BN-ReLU output
            t.conv(channels[d], channels[d + 1], 1, hw)
            if spec.attention:  # its input, pooled, FC-ReLU and gate vectors, and gated output
                t.keep(channels[d + 1], hw)
                t.linear(channels[d + 1], channels[d + 1] // 2)
                t.linear(channels[d + 1] // 2, channels[d + 1])
                t.keep(channels[d + 1])
            t.keep(channels[d + 1], hw)  # the average pool's input
            size //= 2
    tapped = range(spec.periods) if spec.multiscale else [spec.periods - 1]
    for d in tapped:
        t.bn(channels[d])
        t.keep(channels[d], sizes[d])  # ReLU output (its BN input is the period's state)
    t.linear(sum(channels[d] for d in tapped), spec.num_classes)
    return t


def _time_step(t: Tally, spec: ArchSpec, d: int, hw: int) -> None:
    c, k, s, m = spec.channels[d], spec.growth[d], spec.stages[d], spec.groups[d]
    width = spec.neck * k if spec.neck else None
    if spec.form == "clique":
        kernel = 1 if width else 3
        mix_out = width or k
        for i in range(s):  # W(y -> i), used in stage I only
            t.conv(c, mix_out, kernel, hw)
            t.bn(c + i * k)  # stage-I BN of stage i
            t.bn((s - 1) * k)  # stage-II BN of stage i
        # W(j -> i), j != i: used once in stage I (j < i) and once in stage II: s(s-1) kernels,
        # s(s-1)/2 stage-I uses + s(s-1) stage-II uses
        t.params += s * (s - 1) * k * mix_out * kernel * kernel
        t.macs += (s * (s - 1) // 2 + s * (s - 1)) * k * mix_out * kernel * kernel * hw
        # every stage of stage I (sources y and earlier stages) and of stage II (the other stages)
        # keeps its concatenated sources, their BN-ReLU and the kernel concatenated for them
        for sources in [c + i * k for i in range(s)] + [(s - 1) * k] * s:
            t.keep(2 * sources, hw)
            t.saved_per_batch += mix_out * sources * kernel * kernel * FLOAT32
        if t.dropout:  # a mask after each of the 2s mixing convs; `conv` counted stage I's s above
            t.keep(mix_out * s, hw)
        if width:
            for _ in range(s):  # shared 3x3 (width -> k) with a BN per phase
                t.conv(width, k, 3, hw, uses=2)
                t.bn(width)
                t.bn(width)
            t.keep(2 * width, hw, uses=2 * s)  # each stage and phase: BN input, BN-ReLU output
        return
    # explicit or update form; a period with u = 0 has no update layers (an explicit period)
    u = spec.iterations[d] if spec.form == "update" else 0
    # A one-stage update step's updater reads y alone, so each iteration overwrites stage I or the
    # iteration before unread, and the forward frees what those saved: only the last one's stays.
    overwritten = u > 0 and s == 1
    for j in range(m * s):  # explicit stage (the whole step for explicit; stage I for update)
        t.growth(c + j * k, k, width, hw, kept=0 if overwritten else 1)
    if u > 0:
        for _ in range(s):
            t.growth(c + (s - 1) * m * k, m * k, width, hw, uses=u, kept=1 if overwritten else u)
