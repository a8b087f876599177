"""Building blocks shared by the RKCNN family and the baselines (docs/models.md, "Anatomy").

Every conv is pre-activation (BN -> ReLU -> conv) and bias-free; dropout, when asked for,
follows each conv (the 2022 code's keep-probability 0.8 is ``dropout=0.2``).  The batch norm
is passed in as ``norm_layer`` (channels -> module), as torchvision and timm do: the 2022
RKCNNs use ``functools.partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)``, everything else
PyTorch's defaults.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

#: builds the normalisation of a layer from its number of channels
NormLayer = Callable[[int], nn.Module]


class BNReLUConv(nn.Sequential):
    """Pre-activation composite layer: BN -> ReLU -> conv [-> dropout]."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, dropout: float = 0.0, *,
                 stride: int = 1, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        layers: list[nn.Module] = [
            norm_layer(in_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class GrowthLayer(nn.Module):
    """One composite unit of a dense/RK block: [BN-ReLU-1x1 (-> width)] BN-ReLU-3x3 (-> out).

    Takes a *list* of feature maps and concatenates them itself, so that with
    ``memory_efficient=True`` the wide, cheap part of the layer is recomputed in the backward
    pass instead of being stored (the trick of torchvision's DenseNet): the concatenation and
    the bottleneck, or without a bottleneck the concatenation and the 3x3 unit's BN-ReLU, which
    halves what such a layer keeps.  The 3x3 conv itself is never recomputed.
    """

    def __init__(self, in_ch: int, out_ch: int, width: int | None, dropout: float = 0.0, *,
                 norm_layer: NormLayer = nn.BatchNorm2d, memory_efficient: bool = False) -> None:
        super().__init__()
        self.reduce = BNReLUConv(in_ch, width, 1, dropout, norm_layer=norm_layer) if width else None
        self.conv = BNReLUConv(width or in_ch, out_ch, 3, dropout, norm_layer=norm_layer)
        self.memory_efficient = memory_efficient
        # modules of `conv` that run in the recomputed part: its BN and ReLU when no bottleneck
        self._split = 0 if width else 2

    def _entry(self, *features: torch.Tensor) -> torch.Tensor:
        x = torch.cat(features, 1) if len(features) > 1 else features[0]
        if self.reduce is not None:
            x = self.reduce(x)
        for module in list(self.conv)[: self._split]:
            x = module(x)
        return x

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = recomputed(self._entry, self, *features) if self.memory_efficient else self._entry(*features)
        for module in list(self.conv)[self._split:]:
            x = module(x)
        return x


def recomputed(fn: Callable[..., torch.Tensor], owner: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """``fn(*inputs)`` with its intermediates recomputed in the backward pass, not stored.

    Exact: the same gradients, and `owner`'s batch norms count each batch once (see
    `running_stats_frozen`).  Without a backward to come (no grad, or inputs that need none)
    it is a plain call.
    """
    if not (torch.is_grad_enabled() and any(x.requires_grad for x in inputs)):
        return fn(*inputs)
    return checkpoint(fn, *inputs, use_reentrant=False,
                      context_fn=lambda: (nullcontext(), running_stats_frozen(owner)))


@contextmanager
def running_stats_frozen(module: nn.Module) -> Iterator[None]:
    """Batch norms in `module` keep the running statistics they had on entry.

    For the recomputation of a checkpointed part in the backward pass: it repeats the forward
    exactly, and without this every BN in it would count the batch twice in its running mean,
    variance and `num_batches_tracked`, so that a memory-efficient model would evaluate
    differently from the same model trained without it.  (Switching `track_running_stats`
    off instead would change what the recomputation saves for backward, which checkpoint
    rejects.)
    """
    buffers = [b for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)


class ChannelAttention(nn.Module):
    """Attentional transition gate: GAP -> FC C->C/2 -> ReLU -> FC C/2->C -> sigmoid -> scale."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // 2)
        self.fc2 = nn.Linear(channels // 2, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * w[:, :, None, None]


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv C_in -> C_out, [channel attention], 2x2 average pooling."""

    def __init__(self, in_ch: int, out_ch: int, attention: bool, dropout: float = 0.0, *,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        layers: list[nn.Module] = [BNReLUConv(in_ch, out_ch, 1, dropout, norm_layer=norm_layer)]
        if attention:
            layers.append(ChannelAttention(out_ch))
        layers.append(nn.AvgPool2d(2))
        super().__init__(*layers)


def make_stem(kind: str, out_ch: int, norm_layer: NormLayer = nn.BatchNorm2d) -> nn.Sequential:
    """'cifar': one 3x3 conv (no BN/ReLU); 'imagenet': DenseNet's 7x7/2 conv, BN, ReLU, 3x3/2 max-pool."""
    if kind == "cifar":
        return nn.Sequential(nn.Conv2d(3, out_ch, 3, padding=1, bias=False))
    if kind == "imagenet":
        return nn.Sequential(
            nn.Conv2d(3, out_ch, 7, stride=2, padding=3, bias=False),
            norm_layer(out_ch),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
    raise ValueError(f"stem: {kind!r} is not one of cifar, imagenet")


class MultiscaleHead(nn.Module):
    """Postprocessor: BN-ReLU-GAP of each tapped state, concatenated, one linear classifier.

    With one tapped state (no multiscale) this is the usual DenseNet head.
    """

    def __init__(self, channels: list[int], num_classes: int, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.norms = nn.ModuleList(norm_layer(c) for c in channels)
        self.classifier = nn.Linear(sum(channels), num_classes)

    def forward(self, states: list[torch.Tensor]) -> torch.Tensor:
        pooled = [F.relu(norm(s)).mean((2, 3)) for norm, s in zip(self.norms, states)]
        return self.classifier(torch.cat(pooled, 1))


def init_conv_kernel(weight: torch.Tensor) -> None:
    """He-normal with the fan-in, as the official 2022 RKCNN code initialises every conv:
    std sqrt(2 / (in_channels * kernel area))."""
    nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")


def init_weights(model: nn.Module) -> None:
    """The paper's initialisation: He-normal convs (`init_conv_kernel`), Xavier linears, BN weight 1 / bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            init_conv_kernel(module.weight)
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif hasattr(module, "init_kernels"):
            # free-standing shared conv kernels (clique blocks) are Parameters, not Conv2d modules
            module.init_kernels()
