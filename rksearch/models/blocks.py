"""One RK time-step in each of its three forms (docs/models.md, "Time-steps").

Each maps y_n (C = m*k channels) to y_{n+1} = y_n + sum_i h b_i z_i, the increment groups
being learned by a small conv subnetwork whose wiring is the RK method's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rksearch.models.layers import GrowthLayer, NormLayer, init_conv_kernel, recomputed


def increments(grown: list[torch.Tensor], stages: int) -> list[torch.Tensor]:
    """The s increments h b_i z_i from the m*s grown outputs: m consecutive outputs each.

    With m = 1 (the CIFAR models of both papers) they are the outputs themselves, not slices of one
    concatenation: a channel slice of a batch is a strided view, and its gradient reached the
    convs' backward strided too, which then copied it (the official code has no such copies).
    """
    m = len(grown) // stages
    return grown if m == 1 else [torch.cat(grown[i * m:(i + 1) * m], 1) for i in range(stages)]


def rk_sum(y: torch.Tensor, parts: list[torch.Tensor]) -> torch.Tensor:
    """y_n + z_1 + ... + z_s, added in that order as the official code does (no stacked copy).

    The sum is accumulated in place in the one new tensor ``y_n + z_1``: an addition's
    backward needs neither its inputs nor its output, so this is exact and allocates one
    state instead of s.
    """
    total = y + parts[0]
    for z in parts[1:]:
        total.add_(z)
    return total


class ExplicitStep(nn.Module):
    """ERKNet / RKCNN-E time-step: a dense block growing k channels m*s times.

    Layer j sees concat(y_n, outputs 0..j-1); the m*s outputs form s groups of m*k
    channels and y_{n+1} = y_n + sum of the groups.
    """

    def __init__(self, channels: int, growth: int, stages: int, groups: int, width: int | None,
                 dropout: float = 0.0, memory_efficient: bool = False, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.stages = stages
        self.layers = nn.ModuleList(
            GrowthLayer(channels + j * growth, growth, width, dropout,
                        norm_layer=norm_layer, memory_efficient=memory_efficient)
            for j in range(groups * stages)
        )

    def grow(self, y: torch.Tensor) -> list[torch.Tensor]:
        features = [y]
        for layer in self.layers:
            features.append(layer(features))
        return features[1:]

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return rk_sum(y, increments(self.grow(y), self.stages))


class CliqueStep(nn.Module):
    """ICLR IRKNet time-step (m = 1): a CliqueNet block plus the RK summation.

    Stage I computes stage i from y_n and stages 1..i-1; stage II recomputes each stage,
    in order, from the latest values of all *other* stages (Gauss-Seidel), without y_n.
    The mixing kernels W(y->i) and W(j->i) are single Parameters used by both stages:
    each stage's conv kernel is the concatenation of its sources' kernels, so sharing is
    real (one tensor, one gradient).  BN layers are per stage and per phase.

    With a bottleneck the mixing kernels are 1x1 with `width` outputs and each stage
    continues with BN-ReLU-3x3 (width -> k), whose conv is shared by the two phases.
    ``memory_efficient`` recomputes each stage's concatenation and BN-ReLU in the backward
    pass instead of storing them, as `GrowthLayer` does.
    """

    def __init__(self, channels: int, growth: int, stages: int, width: int | None,
                 dropout: float = 0.0, memory_efficient: bool = False, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.stages, self.dropout, self.memory_efficient = stages, dropout, memory_efficient
        ks = 1 if width else 3
        mix_out = width or growth
        self.padding = ks // 2
        self.w_in = nn.ParameterList(nn.Parameter(torch.empty(mix_out, channels, ks, ks)) for _ in range(stages))
        # w_mix[j][i]: kernel from stage j to stage i (j != i); the diagonal is unused
        self.w_mix = nn.ParameterDict({
            f"{j}_{i}": nn.Parameter(torch.empty(mix_out, growth, ks, ks))
            for i in range(stages) for j in range(stages) if i != j
        })
        self.bn_first = nn.ModuleList(norm_layer(channels + i * growth) for i in range(stages))
        self.bn_second = nn.ModuleList(norm_layer((stages - 1) * growth) for _ in range(stages))
        if width:
            self.post_conv = nn.ModuleList(nn.Conv2d(width, growth, 3, padding=1, bias=False) for _ in range(stages))
            self.post_bn = nn.ModuleList(
                nn.ModuleList([norm_layer(width), norm_layer(width)]) for _ in range(stages)
            )
        else:
            self.post_conv = None
        self.init_kernels()

    def init_kernels(self) -> None:
        for p in list(self.w_in) + list(self.w_mix.values()):
            init_conv_kernel(p)

    def _stage(self, i: int, phase: int, sources: list[torch.Tensor], kernels: list[torch.Tensor]) -> torch.Tensor:
        norm = (self.bn_first if phase == 0 else self.bn_second)[i]

        def activated(*parts: torch.Tensor) -> torch.Tensor:
            return F.relu(norm(torch.cat(parts, 1)))

        a = recomputed(activated, norm, *sources) if self.memory_efficient else activated(*sources)
        x = F.conv2d(a, torch.cat(kernels, 1), padding=self.padding)
        x = F.dropout(x, self.dropout, self.training)
        if self.post_conv is not None:
            x = self.post_conv[i](F.relu(self.post_bn[i][phase](x)))
            x = F.dropout(x, self.dropout, self.training)
        return x

    def refine(self, y: torch.Tensor) -> list[torch.Tensor]:
        """Stage I then stage II; the stage-II value of every stage, in order.

        This is the clique block alone (CliqueNet's transit feature); `forward` adds the
        RK summation on top of it.
        """
        s = self.stages
        x: list[torch.Tensor] = []
        for i in range(s):  # stage I
            kernels = [self.w_in[i]] + [self.w_mix[f"{j}_{i}"] for j in range(i)]
            x.append(self._stage(i, 0, [y] + x, kernels))
        for i in range(s):  # stage II, Gauss-Seidel: x holds the latest value of every stage
            others = [j for j in range(s) if j != i]
            x[i] = self._stage(i, 1, [x[j] for j in others], [self.w_mix[f"{j}_{i}"] for j in others])
        return x

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return rk_sum(y, self.refine(y))


class UpdateStep(nn.Module):
    """RKCNN-I / RKCNN-R time-step: explicit stage I, then u update iterations.

    Stage i is recomputed from concat(y_n, all other stages) by its own composite unit
    (BN-ReLU-1x1 -> width, BN-ReLU-3x3 -> m*k), shared across iterations.  Gauss-Seidel
    (RKCNN-I) updates in place; Jacobi (RKCNN-R) recomputes all stages from the previous
    iteration's values.  (`RKCNN` builds a period with u = 0 as an `ExplicitStep`: it has
    no update layers.)
    """

    def __init__(self, channels: int, growth: int, stages: int, groups: int, width: int | None,
                 iterations: int, jacobi: bool, dropout: float = 0.0, memory_efficient: bool = False,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.stages, self.iterations, self.jacobi = stages, iterations, jacobi
        self.first = ExplicitStep(channels, growth, stages, groups, width, dropout, memory_efficient, norm_layer)
        group = groups * growth
        self.updaters = nn.ModuleList(
            GrowthLayer(channels + (stages - 1) * group, group, width, dropout,
                        norm_layer=norm_layer, memory_efficient=memory_efficient)
            for _ in range(stages)
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        s = self.stages
        z = list(increments(self.first.grow(y), s))
        for _ in range(self.iterations):
            source = list(z) if self.jacobi else z  # Jacobi reads a frozen copy
            for i in range(s):
                z[i] = self.updaters[i]([y] + [source[j] for j in range(s) if j != i])
        return rk_sum(y, z)
