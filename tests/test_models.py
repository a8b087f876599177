"""The RKCNN family: names both ways, defaults, validation, shapes, weight sharing, initialisation."""

from __future__ import annotations

import math
import random

import pytest
import torch
from specgen import random_spec
from torch import nn

from rksearch.models import ArchSpec, SpecError, build, families, find_family, model_spec, parse
from rksearch.models.blocks import CliqueStep, ExplicitStep, UpdateStep
from rksearch.models.knobs import split_knobs, stem_and_classes

NAMED = [
    ("ERKNet-6x1 6x1 6x1", {"k": 36}),
    ("IRKNet-5x1 5x1 5x1-AB", {"k": 150, "dataset": "cifar10"}),
    ("ERKNet-3x1 3x1 3x1 1x1-B", {"k": 32, "m": (2, 4, 8, 16), "dataset": "imagenet"}),
    ("RKCNN-E-5_5_5", {"k": 12}),
    ("RKCNN-I-3_3_3", {"k": 80, "attention": True, "neck": 1, "u": 1}),
    ("RKCNN-R-3_3_3", {"k": 24, "u": 2, "r": (1, 2, 1)}),
    ("RKCNN-I-3_3_3", {"k": 12, "u": (0, 1, 1)}),  # the 2022 code's --update1 0 --update2 1 --update3 1
    ("IRKNet-3x2 4x1 2x5", {"k": (12, 24, 36)}),
]


@pytest.mark.parametrize("name, knobs", NAMED)
def test_name_round_trips(name: str, knobs: dict) -> None:
    spec = parse(name, **knobs)
    assert spec.name == name
    assert parse(spec.name, **knobs) == spec
    assert parse(spec.canonical) == spec


def test_random_specs_round_trip_through_canonical_names() -> None:
    rng = random.Random(7)
    for _ in range(500):
        spec = random_spec(rng)
        assert parse(spec.canonical) == spec, spec.canonical
        assert ArchSpec.from_dict(spec.to_dict()) == spec


def test_suffix_letters_set_their_options() -> None:
    spec = parse("IRKNet-5x1 5x1 5x1-AB", k=150)
    assert spec.attention and spec.neck == 1 and spec.form == "clique"
    erk = parse("ERKNet-3x1 3x1 3x1 1x1-B", dataset="imagenet")
    assert erk.neck == 4 and erk.groups == (2, 4, 8, 16) and erk.growth == (32,) * 4
    assert erk.stem == "imagenet" and erk.num_classes == 1000 and not erk.multiscale
    # a bottleneck width given as a knob puts the B in the name
    assert parse("ERKNet-2x1 2x1 2x1", neck="2k").name == "ERKNet-2x1 2x1 2x1-B"


def test_paper_name_terms() -> None:
    spec = parse("ERKNet-3x2 4x1 2x5 1x1")
    assert spec.stages == (3, 4, 2, 1) and spec.steps == (2, 1, 5, 1) and spec.periods == 4


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: parse("ERKNet-0x1 1x1 1x1"), "stages: every s must be >= 1"),
        (lambda: parse("IRKNet-3x1 3x1 3x1", m=2), "clique form (IRKNet) needs m = 1"),
        (lambda: parse("IRKNet-1x1 2x1 2x1"), "clique form needs s >= 2"),
        (lambda: parse("ERKNet-3x1 3x1 3x1-A", attention=False), "contradicts"),
        (lambda: parse("ERKNet-3x1 3x1 3x1-BB"), "repeated letter"),
        (lambda: parse("ERKNet-3x1 3x1 3x1", r=2), "the name gives r"),
        (lambda: parse("ERKNet-3x1 3x1 3x1", k=(12, 24)), "k: 2 values for 3 periods"),
        (lambda: parse("RKCNN-E-3_3_3", u=1), "RKCNN-E is the u = 0 member"),
        (lambda: parse("RKCNN-I-3_3_3", u=0), "u >= 1"),
        (lambda: parse("RKCNN-I-3_3_3", u=0), "u = 0 in every period is RKCNN-E-3_3_3"),
        (lambda: parse("RKCNN-R-3_3_3", u=(0, -1, 1)), "every u must be >= 0"),
        (lambda: parse("DenseNet-3x1"), "bad model name"),
        (lambda: parse("ERKNet-3x1 3x1 3x1", depth=3), "unknown knob"),
        (lambda: parse("ERKNet-3x1 3x1 3x1", dataset="mnist"), "dataset: 'mnist' is not one of"),
        (lambda: ArchSpec(stages=(2, 2), steps=1, growth=4, groups=1, dropout=1.5), "dropout"),
        (lambda: parse("RKCNN-I-3_3_3", k=4, r=1.5), "r: must be integers, got 1.5"),  # not truncated to 1
        (lambda: parse("RKCNN-I-3_3_3 (k=4, r=1.5)"), "r: must be integers"),
    ],
)
def test_invalid_specs_name_the_field(call, fragment: str) -> None:
    with pytest.raises(SpecError, match=None) as err:
        call()
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "call, hint",
    [
        (lambda: parse("RKCNN-I-3_3_3", k=32, neck=128), "divide it by k: 4 for 128 channels at k=32"),
        (lambda: parse("ERKNet-3x1 3x1 3x1-B (k=36, neck=128)"), "divide it by k: 4 for 4k"),
        (lambda: parse("IRKNet-3x1 3x1 3x1", k=(12, 24, 48), neck="9k"), "divide it by k: 4 for 4k"),
        (lambda: ArchSpec(stages=(2, 2, 2), growth=16, neck=64), "4 for 64 channels at k=16"),
    ],
)
def test_a_neck_beyond_8k_is_refused_as_a_width_in_channels(call, hint: str) -> None:
    """Every way to a spec refuses neck 128 (meant as 4k at k=32, it builds a 199M-param model)."""
    with pytest.raises(SpecError) as err:
        call()
    assert str(err.value).startswith("neck: ") and "is a multiple of k, at most 8" in str(err.value)
    assert hint in str(err.value)
    assert parse("RKCNN-I-3_3_3", k=4, neck=8).neck == 8  # the widest taken


def test_a_data_set_means_the_same_stem_and_classes_to_every_family() -> None:
    """One reading of the stem, num_classes and dataset knobs: given outright, else the data
    set's, else the stem's first data set's classes."""
    assert stem_and_classes({}) == ("cifar", 10)
    assert stem_and_classes({"stem": "imagenet"}) == ("imagenet", 1000)
    assert stem_and_classes({"dataset": "cifar100"}, stem="imagenet") == ("cifar", 100)
    assert stem_and_classes({"dataset": "svhn", "stem": "imagenet", "num_classes": 7}) == ("imagenet", 7)
    with pytest.raises(SpecError, match="dataset: 'mnist' is not one of"):
        stem_and_classes({"dataset": "mnist"})
    for dataset, classes in (("cifar100", 100), ("svhn", 10)):
        assert parse("ERKNet-2x1 2x1 2x1", dataset=dataset).num_classes == classes
        assert model_spec("DenseNet-BC-16", dataset=dataset).num_classes == classes
    assert parse("RKCNN-E-2_2_2_2", dataset="imagenet").stem == "imagenet"
    assert model_spec("DenseNet-121", dataset="imagenet").num_classes == 1000


FORMS = [
    parse("ERKNet-2x1 2x1 2x1", k=6),
    parse("ERKNet-2x2 1x1 2x1-AB", k=6, m=2),
    parse("IRKNet-2x1 3x1 2x1", k=6),
    parse("IRKNet-3x1 2x2 2x1-AB", k=6),
    parse("RKCNN-E-2_2_2", k=6, neck=2, dropout=0.2),
    parse("RKCNN-I-2_3_2", k=6, u=2, neck=1, attention=True),
    parse("RKCNN-R-2_2_2", k=6, u=1, m=2, multiscale=False),
    parse("RKCNN-I-2_2_2", k=6, u=(0, 2, 1)),
    parse("RKCNN-R-2_1_2", k=6, u=(1, 0, 2), neck=2, dropout=0.2),  # a one-stage period with u = 0
]


@pytest.mark.parametrize("spec", FORMS, ids=lambda s: s.canonical)
def test_forward_backward_cifar(spec: ArchSpec) -> None:
    model = build(spec)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, spec.num_classes)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("form", ["ERKNet-1x1 1x1 1x1 1x1-B", "IRKNet-2x1 2x1 2x1 2x1", "RKCNN-I-1_1_1_1"])
def test_forward_backward_imagenet(form: str) -> None:
    model = build(form, k=4, m=1, dataset="imagenet", num_classes=7)
    out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 7)
    out.sum().backward()


def test_explicit_step_is_y_plus_sum_of_groups() -> None:
    torch.manual_seed(0)
    step = ExplicitStep(channels=4, growth=2, stages=3, groups=2, width=None).eval()
    y = torch.randn(1, 4, 5, 5)
    grown = step.grow(y)
    assert len(grown) == 6 and all(g.shape[1] == 2 for g in grown)
    groups = [torch.cat(grown[2 * i: 2 * i + 2], 1) for i in range(3)]
    assert torch.allclose(step(y), y + sum(groups))


def test_clique_kernels_are_shared_between_stage_one_and_two() -> None:
    s, k = 3, 4  # a clique block's state has m*k = k channels (m = 1)
    step = CliqueStep(channels=k, growth=k, stages=s, width=None)
    # one kernel per (source, target): s for y -> i and s(s-1) for j -> i, each stored once
    kernel_params = s * (k * k * 9) + s * (s - 1) * (k * k * 9)
    bn_params = sum(2 * (k + i * k) for i in range(s)) + s * 2 * (s - 1) * k
    assert sum(p.numel() for p in step.parameters()) == kernel_params + bn_params
    shared = step.w_mix["0_2"]
    assert [name for name, p in step.named_parameters() if p is shared] == ["w_mix.0_2"]
    # W(0 -> 2) is used in stage I (stage 2 sees stage 0) and in stage II (stage 2 is
    # recomputed from stages 0 and 1): the gradient of the one tensor is the sum of both uses
    y = torch.randn(2, k, 6, 6)
    step(y).sum().backward()
    full = shared.grad.clone()
    with torch.no_grad():
        stage_one = [step._stage(0, 0, [y], [step.w_in[0]])]
    step.zero_grad()
    stage_two_input = step._stage(2, 1, [stage_one[0], torch.zeros(2, k, 6, 6)],
                                  [step.w_mix["0_2"], step.w_mix["1_2"]])
    stage_two_input.sum().backward()
    assert full.abs().sum() > 0 and shared.grad.abs().sum() > 0
    assert not torch.allclose(full, shared.grad)  # stage I's use adds to the same gradient


def test_update_step_gauss_seidel_differs_from_jacobi_only_by_order() -> None:
    torch.manual_seed(0)
    gs = UpdateStep(4, 4, 3, 1, None, iterations=1, jacobi=False).eval()
    jac = UpdateStep(4, 4, 3, 1, None, iterations=1, jacobi=True).eval()
    jac.load_state_dict(gs.state_dict())
    y = torch.randn(1, 4, 6, 6)
    z = list(torch.cat(gs.first.grow(y), 1).chunk(3, 1))
    # Jacobi: every stage from the previous iteration's values
    expected_jacobi = y + sum(gs.updaters[i]([y] + [z[j] for j in range(3) if j != i]) for i in range(3))
    assert torch.allclose(jac(y), expected_jacobi, atol=1e-6)
    assert not torch.allclose(gs(y), expected_jacobi, atol=1e-4)


def test_initialisation_follows_the_paper() -> None:
    model = build("ERKNet-3x1 3x1 3x1", k=36)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    big = max(convs, key=lambda m: m.weight.numel())
    fan_in = big.in_channels * big.kernel_size[0] * big.kernel_size[1]
    assert big.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        if isinstance(m, nn.Linear):
            assert torch.all(m.bias == 0)
            bound = math.sqrt(6 / (m.in_features + m.out_features))
            assert m.weight.abs().max() <= bound


def test_convs_are_initialised_with_the_fan_in_as_in_the_official_code() -> None:
    """He-normal, mode fan_in (the 2022 code's ``kaiming_normal_(mode='fan_in')``): a 1x1 conv
    from 400 to 80 channels has std sqrt(2/400), not the fan-out's sqrt(2/80), 2.2 times more."""
    torch.manual_seed(0)
    model = build("ERKNet-5x1 5x1 5x1-B", k=80, neck=1)  # layer 4 of a period: 80 + 4 * 80 = 400 inputs
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 400)
    assert conv.out_channels == 80 and conv.kernel_size == (1, 1)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.05)
    # the clique block's shared kernels too: W(y -> i) of a 3x3 clique block from 24 channels
    step = CliqueStep(channels=24, growth=24, stages=3, width=None)
    kernels = torch.stack(list(step.w_in))
    assert kernels.std().item() == pytest.approx(math.sqrt(2 / (24 * 9)), rel=0.05)


def test_rkcnn_style_uses_the_2022_bn_constants() -> None:
    iclr = build("ERKNet-1x1 1x1 1x1", k=4)
    rk = build("RKCNN-E-1_1_1", k=4)
    bn_iclr = next(m for m in iclr.modules() if isinstance(m, nn.BatchNorm2d))
    bn_rk = next(m for m in rk.modules() if isinstance(m, nn.BatchNorm2d))
    assert (bn_iclr.eps, bn_iclr.momentum) == (1e-5, 0.1)
    assert (bn_rk.eps, bn_rk.momentum) == (1e-3, 0.01)


def test_dropout_after_each_conv_when_asked() -> None:
    model = build("RKCNN-E-2_2_2", k=4, dropout=0.2)
    n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    n_drop = sum(isinstance(m, nn.Dropout) for m in model.modules())
    assert n_drop == n_conv - 1  # every conv but the stem's


MEMORY_EFFICIENT_CASES = [
    ("ERKNet-2x1 2x1 2x1", {}),
    ("ERKNet-2x1 2x1 2x1-B", {"dropout": 0.2}),  # dropout inside the recomputed bottleneck
    ("IRKNet-2x1 2x1 2x1", {}),
    ("IRKNet-2x1 2x1 2x1-B", {}),
    ("RKCNN-I-2_2_2", {"neck": 2, "u": 1}),
    ("CliqueNet-T6-ABC", {"dropout": 0.2}),
]


@pytest.mark.parametrize(("name", "knobs"), MEMORY_EFFICIENT_CASES)
def test_memory_efficient_trains_exactly_like_the_plain_model(name: str, knobs: dict) -> None:
    """Same gradients, and the same running statistics after two steps: the recomputation in
    the backward pass must not count a batch twice in any batch norm."""
    torch.manual_seed(0)
    plain = build(name, k=4, **knobs)
    efficient = build(name, memory_efficient=True, k=4, **knobs)
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for model in (plain, efficient):
        torch.manual_seed(1)  # the same dropout masks
        for _ in range(2):
            model(x).sum().backward()
    for (name_a, a), b in zip(plain.named_parameters(), efficient.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name_a
    for key, value in plain.state_dict().items():
        assert torch.equal(value, efficient.state_dict()[key]), key


@pytest.mark.parametrize(("name", "knobs"), [
    ("ERKNet-4x1 4x1 4x1", {}), ("ERKNet-4x1 4x1 4x1-B", {}), ("IRKNet-4x1 4x1 4x1", {}),
    ("IRKNet-4x1 4x1 4x1-B", {}), ("RKCNN-I-4_4_4", {"neck": 2, "u": 1}), ("CliqueNet-T12-ABC", {}),
])  # fmt: skip
def test_memory_efficient_stores_less_for_backward(name: str, knobs: dict) -> None:
    """Every form, with or without a bottleneck, keeps at most 85 % of the plain model's saved
    activations at 4 stages per period (measured 0.54-0.81 at k=12; the saving grows with the
    stages, as the concatenations do)."""

    def saved_bytes(model: nn.Module) -> int:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.randn(2, 3, 32, 32))
        return sum(storages.values())

    plain = saved_bytes(build(name, k=12, **knobs))
    assert saved_bytes(build(name, memory_efficient=True, k=12, **knobs)) <= 0.85 * plain


# ---- defaults, mixed update counts, the family protocol -----------------------------------------

def test_one_set_of_defaults_for_names_and_fields() -> None:
    """An unset k or m means the same whether the spec comes from a name or from fields (a study's):
    the paper's k = 36, m = 1 on CIFAR (Table 1) and k = 32, m = 2, 4, 8, 16 on ImageNet (Table 3)."""
    assert parse("ERKNet-6x1 6x1 6x1") == ArchSpec(stages=(6, 6, 6))
    cifar = ArchSpec(stages=(6, 6, 6))
    assert cifar.growth == (36,) * 3 and cifar.groups == (1,) * 3 and cifar.steps == (1,) * 3
    assert cifar.multiscale and cifar.num_classes == 10 and cifar.style == "iclr"
    imagenet = ArchSpec(stages=(3, 3, 3, 1), stem="imagenet", neck=4)
    assert imagenet == parse("ERKNet-3x1 3x1 3x1 1x1-B", dataset="imagenet")
    assert imagenet.growth == (32,) * 4 and imagenet.groups == (2, 4, 8, 16)
    assert not imagenet.multiscale and imagenet.num_classes == 1000
    assert ArchSpec(stages=(2, 2), form="update").style == "rkcnn"


def test_a_period_with_no_updates_is_an_explicit_period() -> None:
    """RKCNN-I with u = 0, 1, 1 (the 2022 code's ``--update1 0``): period 1 has no update layers,
    exactly RKCNN-E's period 1, and the other periods are RKCNN-I's."""
    mixed = build("RKCNN-I-3_3_3", k=8, u=(0, 1, 1))
    explicit, updated = build("RKCNN-E-3_3_3", k=8), build("RKCNN-I-3_3_3", k=8, u=1)
    assert isinstance(mixed.periods[0][0], ExplicitStep) and isinstance(mixed.periods[1][0], UpdateStep)

    def keys(model: nn.Module, period: int) -> list[str]:
        return [k for k in model.state_dict() if k.startswith(f"periods.{period}.")]

    assert keys(mixed, 0) == keys(explicit, 0) and keys(mixed, 1) == keys(updated, 1) != keys(explicit, 1)
    out = mixed(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_every_name_has_one_family_that_parses_builds_and_prices_it() -> None:
    assert {f.name for f in families()} >= {"RKCNN", "DenseNet-BC", "DenseNet (ImageNet)", "CliqueNet",
                                           "PreActResNet", "LM-ResNet"}
    for name in ("RKCNN-I-2_2_2", "DenseNet-BC-40", "CliqueNet-T6", "LM-ResNet-20"):
        family = find_family(name)
        spec = model_spec(name, k=4) if family.name not in ("LM-ResNet",) else model_spec(name)
        assert spec.family == family.name and family.parse(spec.canonical) == spec
        assert spec.default_image_size == 32 and isinstance(build(spec), nn.Module)
    assert find_family("RKCNN-I-2_2_2").tally is not None and find_family("DenseNet-BC-40").tally is None
    with pytest.raises(SpecError, match="given with a spec"):
        build(parse("RKCNN-E-2_2_2"), k=4)


def test_knob_lists_split_on_key_boundaries() -> None:
    assert split_knobs("ERKNet-2x1 2x1 (k=12,24, m=1, stem=cifar)", ("k", "m", "stem")) == (
        "ERKNet-2x1 2x1", {"k": (12, 24), "m": 1, "stem": "cifar"})
    with pytest.raises(SpecError, match="unknown knob 'depth'"):
        split_knobs("ERKNet-2x1 2x1 (depth=3)", ("k",))
