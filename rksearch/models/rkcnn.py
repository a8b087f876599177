"""The RKCNN network: stem -> periods of RK time-steps -> transitions -> multiscale head.

Importing this module registers the RKCNN family (every ERKNet / IRKNet / RKCNN-E/I/R name)
with `rksearch.models.registry`; its specs are priced in closed form (`cost.tally`).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from rksearch.models.blocks import CliqueStep, ExplicitStep, UpdateStep
from rksearch.models.cost import tally
from rksearch.models.layers import (
    MultiscaleHead,
    NormLayer,
    Transition,
    init_weights,
    make_stem,
)
from rksearch.models.naming import is_rkcnn_name, parse
from rksearch.models.registry import Family, register_family
from rksearch.models.spec import ArchSpec

#: the batch norm of the 2022 RKCNN code (eps 1e-3 and momentum 0.01 in PyTorch's convention);
#: the ICLR models use PyTorch's defaults
RKCNN_NORM: NormLayer = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)


class RKCNN(nn.Module):
    """Any member of the family, built exactly from an `ArchSpec`.

    ``memory_efficient`` recomputes the dense concatenations (and bottlenecks) in the
    backward pass instead of storing them; it changes memory, not the maths.
    """

    def __init__(self, spec: ArchSpec, memory_efficient: bool = False) -> None:
        super().__init__()
        self.spec = spec
        norm_layer = RKCNN_NORM if spec.style == "rkcnn" else nn.BatchNorm2d
        channels = spec.channels
        self.stem = make_stem(spec.stem, channels[0], norm_layer)
        self.periods = nn.ModuleList(
            nn.Sequential(*(self._step(spec, d, memory_efficient, norm_layer) for _ in range(spec.steps[d])))
            for d in range(spec.periods)
        )
        self.transitions = nn.ModuleList(
            Transition(channels[d], channels[d + 1], spec.attention, spec.dropout, norm_layer=norm_layer)
            for d in range(spec.periods - 1)
        )
        tapped = list(channels) if spec.multiscale else [channels[-1]]
        self.head = MultiscaleHead(tapped, spec.num_classes, norm_layer)
        init_weights(self)

    @staticmethod
    def _step(spec: ArchSpec, d: int, memory_efficient: bool, norm_layer: NormLayer) -> nn.Module:
        """One time-step of period `d`; an update-form period with u = 0 is an explicit one."""
        c, k, s, m = spec.channels[d], spec.growth[d], spec.stages[d], spec.groups[d]
        width = spec.neck * k if spec.neck else None
        if spec.form == "clique":
            return CliqueStep(c, k, s, width, spec.dropout, memory_efficient, norm_layer)
        if spec.form == "explicit" or spec.iterations[d] == 0:
            return ExplicitStep(c, k, s, m, width, spec.dropout, memory_efficient, norm_layer)
        return UpdateStep(c, k, s, m, width, spec.iterations[d], spec.solver == "jacobi",
                          spec.dropout, memory_efficient, norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        states = []
        for d, period in enumerate(self.periods):
            x = period(x)
            states.append(x)
            if d < len(self.transitions):
                x = self.transitions[d](x)
        return self.head(states if self.spec.multiscale else states[-1:])


register_family(Family(name="RKCNN", example="ERKNet-6x1 6x1 6x1", matches=is_rkcnn_name, parse=parse,
                       build=RKCNN, tally=tally))
