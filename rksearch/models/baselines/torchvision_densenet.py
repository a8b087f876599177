"""torchvision's ImageNet DenseNets, with a memory-efficient mode that trains like the plain one.

torchvision's ``memory_efficient=True`` recomputes each layer's concatenation + BN-ReLU-1x1 in
the backward pass with BN in training mode, so every BN there counts each batch twice in its
running statistics and the model evaluates differently from the same model trained without
it.  `ExactDenseLayer` recomputes through `rksearch.models.layers.recomputed`, which restores
those statistics.  A module of its own so that torchvision is imported only when one of these
models is built (importing it costs ~2 s per process).
"""

from __future__ import annotations

import torchvision
from torch import Tensor, nn
from torchvision.models.densenet import _DenseLayer

from rksearch.models.layers import recomputed


class ExactDenseLayer(_DenseLayer):
    """torchvision's dense layer whose recomputed bottleneck leaves BN running statistics alone."""

    def call_checkpoint_bottleneck(self, input: list[Tensor]) -> Tensor:  # noqa: A002 (torchvision's name)
        return recomputed(lambda *features: self.bn_function(list(features)), self, *input)


def densenet(depth: int, num_classes: int, dropout: float, memory_efficient: bool) -> nn.Module:
    """torchvision's DenseNet-`depth` with weights=None (nothing downloaded, its own initialisation)."""
    model = getattr(torchvision.models, f"densenet{depth}")(
        weights=None, num_classes=num_classes, drop_rate=dropout, memory_efficient=memory_efficient)
    for layer in model.modules():
        if type(layer) is _DenseLayer:
            layer.__class__ = ExactDenseLayer  # same parameters and state-dict keys, exact recomputation
    return model
