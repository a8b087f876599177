"""The RKCNN network: stem -> periods of RK time-steps -> transitions -> multiscale head."""

from __future__ import annotations

import torch
from torch import nn

from rksearch.models.blocks import CliqueStep, ExplicitStep, UpdateStep
from rksearch.models.layers import MultiscaleHead, Transition, init_weights, make_stem
from rksearch.models.spec import ArchSpec

#: BN constants of the 2022 RKCNN code (PyTorch convention); the ICLR models use PyTorch's defaults
RKCNN_BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}


class RKCNN(nn.Module):
    """Any member of the family, built exactly from an `ArchSpec`.

    ``memory_efficient`` recomputes the dense concatenations (and bottlenecks) in the
    backward pass instead of storing them; it changes memory, not the maths.
    """

    def __init__(self, spec: ArchSpec, memory_efficient: bool = False) -> None:
        super().__init__()
        self.spec = spec
        bn_kw = RKCNN_BN if spec.style == "rkcnn" else {}
        channels = spec.channels
        self.stem = make_stem(spec.stem, channels[0], **bn_kw)
        self.periods = nn.ModuleList(
            nn.Sequential(*(self._step(spec, d, memory_efficient, bn_kw) for _ in range(spec.steps[d])))
            for d in range(spec.periods)
        )
        self.transitions = nn.ModuleList(
            Transition(channels[d], channels[d + 1], spec.attention, spec.dropout, **bn_kw)
            for d in range(spec.periods - 1)
        )
        tapped = list(channels) if spec.multiscale else [channels[-1]]
        self.head = MultiscaleHead(tapped, spec.num_classes, **bn_kw)
        init_weights(self)

    @staticmethod
    def _step(spec: ArchSpec, d: int, memory_efficient: bool, bn_kw: dict[str, float]) -> nn.Module:
        c, k, s, m = spec.channels[d], spec.growth[d], spec.stages[d], spec.groups[d]
        width = spec.neck * k if spec.neck else None
        if spec.form == "explicit":
            return ExplicitStep(c, k, s, m, width, spec.dropout, memory_efficient, **bn_kw)
        if spec.form == "clique":
            return CliqueStep(c, k, s, width, spec.dropout, memory_efficient, **bn_kw)
        return UpdateStep(c, k, s, m, width, spec.iterations[d], spec.solver == "jacobi",
                          spec.dropout, memory_efficient, **bn_kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        states = []
        for d, period in enumerate(self.periods):
            x = period(x)
            states.append(x)
            if d < len(self.transitions):
                x = self.transitions[d](x)
        return self.head(states if self.spec.multiscale else states[-1:])
