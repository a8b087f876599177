"""The baselines (docs/models.md, "Baselines"): names, shapes, published sizes, weight sharing, k_n.

Expected sizes come from outside the code under test: closed-form counts written here from
the papers' layer tables, the DenseNet paper's 0.8M for DenseNet-BC-100 (k=12), He et al.'s
1.7M for ResNet-110, and the params/GFLOPS that torchvision documents for its DenseNets.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

from rksearch.cost import count
from rksearch.models import SpecError, build, families
from rksearch.models.baselines import FAMILIES, CliqueNet, ResNetSpec, parse
from rksearch.models.blocks import CliqueStep

# small CIFAR variants of every family and option, cheap enough for forward + backward
SMALL_CIFAR = [
    ("DenseNet-BC-16", {"k": 4}),
    ("CliqueNet-T6", {"k": 4}),
    ("CliqueNet-T6-A", {"k": 4}),
    ("CliqueNet-T6-B", {"k": 4}),
    ("CliqueNet-T6-C", {"k": 4}),
    ("CliqueNet-T6-ABC", {"k": 4, "dataset": "cifar100"}),
    ("PreActResNet-8", {}),
    ("LM-ResNet-14", {"num_classes": 7}),
]


def _classes(knobs: dict) -> int:
    return knobs.get("num_classes", 100 if knobs.get("dataset") == "cifar100" else 10)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- shapes ---------------------------------------------------------------------
@pytest.mark.parametrize("name, knobs", SMALL_CIFAR)
def test_cifar_forms_map_32px_images_to_logits_and_train(name: str, knobs: dict) -> None:
    torch.manual_seed(0)
    model = build(name, **knobs)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, _classes(knobs))
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_densenet_bc_memory_efficient_path_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    plain = build("DenseNet-BC-16", k=4).eval()
    checkpointed = build("DenseNet-BC-16", memory_efficient=True, k=4).eval()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    assert torch.allclose(plain(x), checkpointed(x), atol=1e-5)


@pytest.mark.parametrize("name, knobs, size", [("DenseNet-BC-16", {"k": 4}, 32), ("DenseNet-121", {}, 64)])
def test_densenet_memory_efficient_training_matches_the_plain_model(name: str, knobs: dict, size: int) -> None:
    """Gradients and BN running statistics after a step equal the plain model's (torchvision's
    own memory-efficient DenseNet counts each batch twice in the recomputed BNs)."""
    torch.manual_seed(0)
    plain = build(name, **knobs)
    efficient = build(name, memory_efficient=True, **knobs)
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, size, size)
    for model in (plain, efficient):
        model(x).sum().backward()
    for a, b in zip(plain.parameters(), efficient.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-4)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, efficient.state_dict()[key]), key


def test_densenet_121_maps_a_224px_image_to_1000_logits() -> None:
    model = build("DenseNet-121", dataset="imagenet").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize("depth", [161, 169, 201])
def test_larger_imagenet_densenets_have_224px_shapes(depth: int) -> None:
    with torch.device("meta"):
        model = build(f"DenseNet-{depth}", num_classes=500).eval()
        with torch.no_grad():
            assert model(torch.empty(1, 3, 224, 224)).shape == (1, 500)


# ---- sizes against independent figures -------------------------------------------
def _densenet_bc_cost(depth: int, k: int, classes: int, size: int = 32) -> tuple[int, int]:
    """Params and MACs of CIFAR DenseNet-BC from Huang et al.'s description, layer by layer."""
    n = (depth - 4) // 6
    params = macs = 0
    c = 2 * k
    params += 3 * c * 9
    macs += 3 * c * 9 * size * size
    for block in range(3):
        hw = size * size
        for j in range(n):
            cin = c + j * k
            params += 2 * cin + cin * 4 * k + 2 * 4 * k + 4 * k * k * 9  # BN, 1x1, BN, 3x3
            macs += (cin * 4 * k + 4 * k * k * 9) * hw
        c += n * k
        if block < 2:  # BN, 1x1 compressing by 0.5, 2x2 average pool
            params += 2 * c + c * (c // 2)
            macs += c * (c // 2) * hw
            c //= 2
            size //= 2
    params += 2 * c + c * classes + classes
    macs += c * classes
    return params, macs


def test_densenet_bc_100_k12_matches_the_paper_and_the_layer_formula() -> None:
    params, macs = _densenet_bc_cost(100, 12, 10)
    cost = count("DenseNet-BC-100", k=12, dataset="cifar10")
    assert (cost.params, cost.macs) == (params, macs)
    assert f"{cost.params / 1e6:.1f}M" == "0.8M"  # Huang et al. 2017, Table 2: DenseNet-BC (L=100, k=12)
    assert cost.flops == 2 * cost.macs


@pytest.mark.parametrize(
    "depth, params, gflops",  # torchvision's documented num_params and GFLOPS (multiply-adds)
    [(121, 7_978_856, 2.83), (161, 28_681_000, 7.73), (169, 14_149_480, 3.36), (201, 20_013_928, 4.29)],
)
def test_imagenet_densenets_are_torchvisions(depth: int, params: int, gflops: float) -> None:
    with torch.device("meta"):
        ours = build(f"DenseNet-{depth}")
        theirs = getattr(torchvision.models, f"densenet{depth}")(weights=None)
    assert _params(ours) == _params(theirs) == params
    assert [p.shape for p in ours.parameters()] == [p.shape for p in theirs.parameters()]
    cost = count(f"DenseNet-{depth}", dataset="imagenet")
    assert cost.params == params and round(cost.macs / 1e9, 2) == gflops


def _cliquenet_params(layers: int, k: int, classes: int) -> int:
    """CliqueNet (no A/B/C) from Yang et al.: each kernel W(0->i), W(j->i) stored once."""
    n = layers // 3
    total = 3 * 64 * 9  # stem
    heads = []
    for cin in (64, n * k, n * k):
        total += n * cin * k * 9 + n * (n - 1) * k * k * 9  # shared kernels
        total += sum(2 * (cin + i * k) for i in range(n)) + n * 2 * (n - 1) * k  # stage I / II BNs
        heads.append(cin + n * k)  # block feature {X0, stage II}
    total += 2 * (2 * n * k + n * k * n * k)  # two transitions: BN + 1x1 (nk -> nk)
    total += sum(2 * c for c in heads) + sum(heads) * classes + classes
    return total


def test_cliquenet_t12_k36_matches_the_layer_formula() -> None:
    cost = count("CliqueNet-T12", k=36, dataset="cifar10")
    assert cost.params == _cliquenet_params(12, 36, 10)
    assert _cliquenet_params(6, 4, 10) == _params(build("CliqueNet-T6", k=4))


def test_preact_resnet_110_has_he_et_als_size() -> None:
    cost = count("PreActResNet-110", dataset="cifar10")
    assert f"{cost.params / 1e6:.1f}M" == "1.7M"  # He et al. 2016, ResNet-110: 1.7M
    lm = count("LM-ResNet-110", dataset="cifar10")
    assert lm.params - cost.params == 3 * 18 - 3 and lm.flops == cost.flops  # one scalar k_n per block


# ---- CliqueNet reuses the RKCNN clique block and shares its kernels ---------------
class _KernelUses(TorchFunctionMode):
    """Counts, per Parameter, how often it enters a kernel (torch.cat of kernels or a conv weight)."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        super().__init__()
        self.ids = {id(p): p for p in params}
        self.uses: Counter[int] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.cat:
            for t in args[0]:
                if id(t) in self.ids:
                    self.uses[id(t)] += 1
        elif func is F.conv2d and id(args[1]) in self.ids:
            self.uses[id(args[1])] += 1
        return func(*args, **kwargs)


@pytest.mark.parametrize("name", ["CliqueNet-T9", "CliqueNet-T9-B"])
def test_cliquenet_shares_each_kernel_between_its_two_stages(name: str) -> None:
    model = build(name, k=4)
    assert isinstance(model, CliqueNet) and all(type(b) is CliqueStep for b in model.blocks)
    block, s = model.blocks[1], 3
    kernels = list(block.w_in) + list(block.w_mix.values())
    assert len(kernels) == s + s * (s - 1)
    post = [c.weight for c in block.post_conv] if block.post_conv is not None else []
    with _KernelUses(kernels + post) as spy:
        model(torch.randn(1, 3, 32, 32))
    for i in range(s):
        assert spy.uses[id(block.w_in[i])] == 1  # W(0 -> i): stage I only
        for j in range(s):
            if j != i:  # W(j -> i): stage II, and stage I too when j came earlier
                assert spy.uses[id(block.w_mix[f"{j}_{i}"])] == (2 if j < i else 1), (j, i)
    for weight in post:  # B: the 3x3 after the shared 1x1 is shared by both stages as well
        assert spy.uses[id(weight)] == 2
    # sharing is real: each kernel is stored once, so the model holds no second copy
    storages = [p.untyped_storage().data_ptr() for p in model.parameters()]
    assert len(storages) == len(set(storages))


# ---- LM-ResNet ----------------------------------------------------------------------
def test_lm_resnet_k_n_is_a_learned_scalar_per_block() -> None:
    torch.manual_seed(0)
    model = build("LM-ResNet-14")
    ks = dict(model.lm_k.items())
    # blocks 1, 3, 5 keep their shape; block 0 has no x_{n-1}, blocks 2 and 4 downsample
    assert sorted(ks) == ["1", "3", "5"]
    assert all(k.shape == () and k.requires_grad and -0.1 <= k.item() <= 0 for k in ks.values())
    param_ids = {id(p) for p in model.parameters()}
    assert all(id(k) in param_ids for k in ks.values())  # an optimiser over parameters() trains them
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(k.grad is not None and k.grad.abs() > 0 for k in ks.values())


def test_lm_resnet_step_is_the_two_step_scheme() -> None:
    torch.manual_seed(0)
    lm = build("LM-ResNet-14").eval()
    x = torch.randn(1, 3, 32, 32)
    seen: dict[str, torch.Tensor] = {}
    branches = lm.blocks[2].branches

    def keep_input(state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen["x2"] = state  # the state the network hands to block 2
        return branches(state)

    lm.blocks[2].branches = keep_input
    with torch.no_grad():
        logits = lm(x)
        x0 = lm.stem(x)
        x1 = lm.blocks[0](x0)
        shortcut, f1 = lm.blocks[1].branches(x1)
        assert torch.equal(shortcut, x1)
        k = lm.lm_k["1"]
        # x_2 = (1 - k_1) x_1 + k_1 x_0 + f(x_1), x_0 being the stem's output
        assert torch.allclose(seen["x2"], (1 - k) * x1 + k * x0 + f1, atol=1e-6)
        assert not torch.allclose(seen["x2"], x1 + f1, atol=1e-6)
        # with every k_n = 0 the network is exactly the pre-activation ResNet
        preact = build("PreActResNet-14").eval()
        missing, unexpected = preact.load_state_dict(lm.state_dict(), strict=False)
        assert not missing and sorted(unexpected) == ["lm_k.1", "lm_k.3", "lm_k.5"]
        assert not torch.allclose(logits, preact(x))
        for p in lm.lm_k.values():
            p.zero_()
        assert torch.allclose(lm(x), preact(x), atol=1e-6)


# ---- names ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, knobs",
    [("DenseNet-BC-100", {"k": 24}), ("DenseNet-169", {}), ("CliqueNet-T30-ABC", {"k": 150}),
     ("PreActResNet-110", {"dataset": "cifar100"}), ("LM-ResNet-56", {"num_classes": 10})],
)
def test_baseline_names_round_trip_through_canonical_strings(name: str, knobs: dict) -> None:
    spec = parse(name, **knobs)
    assert spec.name == name
    assert parse(spec.canonical) == spec
    assert parse(spec.canonical, **knobs) == spec


def test_the_baseline_families_are_the_registered_ones() -> None:
    """`FAMILIES` names families by the spec classes' constants, so it cannot drift from the registry."""
    assert set(FAMILIES) <= {family.name for family in families()}
    assert parse("PreActResNet-20").family == "PreActResNet" and parse("LM-ResNet-20").family == "LM-ResNet"
    assert [parse(f"{name}-20").family for name in (ResNetSpec.PREACT, ResNetSpec.LM)] == list(FAMILIES[-2:])


def test_knobs_beside_the_name_and_in_it_agree() -> None:
    assert parse("CliqueNet-T12 (k=64)").growth == 64
    assert parse("DenseNet-BC-40", k="24", dataset="cifar100").num_classes == 100
    assert parse("CliqueNet-T12", stem="cifar", k=None).growth == 36  # None counts as not given
    assert parse("DenseNet-121").num_classes == 1000


@pytest.mark.parametrize(
    "call, fragments",
    [
        (lambda: build("Foo-1"), ["known families", "DenseNet-BC", "DenseNet (ImageNet)", "CliqueNet",
                                  "PreActResNet", "LM-ResNet", "RKCNN"]),
        (lambda: build("DenseNet-BC-99"), ["6n + 4", "DenseNet-BC-100"]),
        (lambda: build("DenseNet-100"), ["DenseNet-121", "DenseNet-BC-<depth>"]),
        (lambda: build("CliqueNet-T13"), ["3n", "CliqueNet-T30-ABC"]),
        (lambda: build("CliqueNet-T12-AD"), ["A, B, C"]),
        (lambda: build("CliqueNet-12"), ["CliqueNet-T<T>"]),
        (lambda: build("LM-ResNet-57"), ["6n + 2", "LM-ResNet-56"]),
        (lambda: build("PreActResNet-110", k=12), ["unknown knob", "allowed: dataset, num_classes, stem"]),
        (lambda: build("CliqueNet-T12 (m=2)"), ["unknown knob 'm'", "allowed: k"]),
        (lambda: build("DenseNet-BC-100 (k=12)", k=24), ["the name says 12"]),
        (lambda: build("DenseNet-BC-100", dataset="imagenet"), ["DenseNet-121/161/169/201"]),
        (lambda: build("DenseNet-BC-100", stem="imagenet"), ["cifar stem"]),
        (lambda: build("DenseNet-121", dataset="cifar10"), ["DenseNet-BC-100"]),
        (lambda: build("DenseNet-BC-100", dataset="mnist"), ["dataset 'mnist' is not one of cifar10, cifar100"]),
        (lambda: build("LM-ResNet-20", stem="cifar", dataset="imagenet"), ["not one of cifar10", "DenseNet-121"]),
        (lambda: build("CliqueNet-T12", k=0), ["k must be an integer >= 1"]),
        (lambda: build("DenseNet-BC-100", dropout=1.5), ["dropout"]),
    ],
)
def test_bad_baseline_names_say_what_is_allowed(call, fragments: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        call()
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
