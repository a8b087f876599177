"""Costs: the paper's worked example, closed form vs traced count, training memory vs what
autograd and SGD really hold, and the CLI."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import weakref

import pytest
import torch
from specgen import random_spec
from torch import nn

from rksearch.cost import (
    Cost,
    Memory,
    closed_form,
    count,
    human_bytes,
    main,
    trace,
    training_memory,
)
from rksearch.models import build, parse

# docs/models.md, "Counting": paper Table 1, ERKNet on CIFAR-10, k = 36, m = 1, multiscale
TABLE1_ERKNET = [
    ("ERKNet-6x1 6x1 6x1", 0.66, 0.74),
    ("ERKNet-7x1 6x1 6x1", 0.83, 0.83),
    ("ERKNet-7x1 7x1 6x1", 0.87, 0.91),
    ("ERKNet-7x1 7x1 7x1", 0.88, 0.99),
]


@pytest.mark.parametrize("name, gflops, mparams", TABLE1_ERKNET)
def test_table1_erknet_through_api(name: str, gflops: float, mparams: float) -> None:
    cost = count(name, k=36, dataset="cifar10")
    assert round(cost.flops / 1e9, 2) == gflops
    assert round(cost.params / 1e6, 2) == mparams
    assert cost.flops == 2 * cost.macs


def _cost_command(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`python -m rksearch.cost ARGS` run in this process (its `main`, as the module runs it):
    exit status, stdout, stderr.  tests/test_cli.py runs the real module once as a subprocess."""
    try:
        status = main(args)
    except SystemExit as exc:  # argparse's own usage errors
        status = exc.code
    out = capsys.readouterr()
    return status, out.out, out.err


def test_table1_erknet_through_cli(capsys: pytest.CaptureFixture[str]) -> None:
    for name, gflops, mparams in TABLE1_ERKNET:
        status, out, err = _cost_command([name, "--growth-rate", "36", "--dataset", "cifar10", "--json"], capsys)
        assert status == 0, err
        row = json.loads(out)
        assert row["name"] == name
        assert round(row["flops"] / 1e9, 2) == gflops and round(row["params"] / 1e6, 2) == mparams
        assert row["macs"] * 2 == row["flops"]


def test_hand_count_of_smallest_table1_model() -> None:
    # ERKNet-6x1 6x1 6x1, k=36, counted by hand from docs/models.md ("Anatomy", "Time-steps"):
    # per period: 6 layers, layer j: BN(36+36j) + 3x3 conv (36+36j -> 36)
    period_in = sum(36 + 36 * j for j in range(6))
    params = 3 * 36 * 9 + 3 * (9 * 36 * period_in + 2 * period_in) + 2 * (2 * 36 + 36 * 36) + 3 * 72 + 108 * 10 + 10
    macs = 9 * 3 * 36 * 1024 + 9 * 36 * period_in * (1024 + 256 + 64) + 36 * 36 * (1024 + 256) + 108 * 10
    assert count("ERKNet-6x1 6x1 6x1", k=36) == Cost(params, 2 * macs, macs)


def test_a_named_baseline_is_priced_at_the_input_size_it_is_made_for() -> None:
    """DenseNet-121 is an ImageNet model: without a data set it is still priced at 224x224 (the
    paper's 5.7 GFLOPs), and a CIFAR baseline at 32x32; an explicit size wins."""
    imagenet = count("DenseNet-121")
    assert imagenet == count("DenseNet-121", dataset="imagenet") == count("DenseNet-121", image_size=224)
    assert round(imagenet.flops / 1e9, 2) == 5.67 and imagenet.flops > 40 * count("DenseNet-121", image_size=32).flops
    assert count("DenseNet-BC-100", k=12) == count("DenseNet-BC-100", image_size=32, k=12)


def test_closed_form_equals_traced_count_for_random_specs() -> None:
    # real (CPU) tensors: tracing BN on the meta device goes through slow decompositions;
    # ImageNet-stem specs are compared at 64x64 to keep the suite fast (the stem maths is the same)
    rng = random.Random(2019)
    kinds = set()
    mixed = 0  # update-form specs with u = 0 in some period
    for _ in range(200):
        spec = random_spec(rng)
        kinds.add((spec.form, spec.solver, spec.bottleneck, spec.stem))
        mixed += spec.form == "update" and 0 in spec.iterations
        size = 64 if spec.stem == "imagenet" else 32
        assert closed_form(spec, size) == trace(build(spec), size), spec.canonical
    assert {kind[0] for kind in kinds} == {"explicit", "clique", "update"}
    assert len(kinds) >= 10 and mixed >= 5


@pytest.mark.parametrize("name, knobs", [
    ("RKCNN-I-3_3_3", dict(k=12, u=(0, 1, 1))),  # the 2022 code's --update1 0 --update2 1 --update3 1
    ("RKCNN-R-2_1_3", dict(k=8, u=(2, 0, 1), neck=4, attention=True)),
    ("RKCNN-I-1_2_2", dict(k=8, u=(1, 0, 0), dropout=0.2, multiscale=False)),
])  # fmt: skip
def test_mixed_update_counts_are_priced_in_closed_form(name: str, knobs: dict) -> None:
    """A period with u = 0 costs what the explicit period does; the count equals the traced one."""
    spec = parse(name, **knobs)
    assert closed_form(spec, 32) == trace(build(spec), 32)
    explicit = spec.replace(form="explicit", solver="gauss-seidel", iterations=())  # RKCNN-E
    everywhere = spec.replace(iterations=max(spec.iterations))
    assert closed_form(explicit, 32).params < closed_form(spec, 32).params < closed_form(everywhere, 32).params


def test_trace_on_meta_device_matches_closed_form() -> None:
    spec = parse("ERKNet-3x1 3x1 3x1 1x1-B", dataset="imagenet")  # 7M params, never allocated
    with torch.device("meta"):
        model = build(spec)
    assert trace(model, 224) == closed_form(spec, 224)


def test_image_size_changes_flops_not_params() -> None:
    spec = parse("IRKNet-3x1 3x1 3x1", k=12)
    small, large = count(spec, 32), count(spec, 64)
    assert small.params == large.params
    assert 3.9 < large.flops / small.flops < 4.1


def test_count_of_a_module_equals_its_spec() -> None:
    spec = parse("RKCNN-R-2_2_2", k=8, u=2, neck=2, attention=True)
    assert count(build(spec)) == count(spec)


def test_cli_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["IRKNet-5x1 5x1 5x1-AB", "--growth-rate", "150", "--dataset", "cifar10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("IRKNet-5x1 5x1 5x1-AB (k=150")
    assert out[1].startswith("params") and out[2].startswith("FLOPs") and out[3].startswith("MACs")


def test_cli_suffix_and_knobs_agree(capsys: pytest.CaptureFixture[str]) -> None:
    def run(*args: str) -> dict:
        status, out, err = _cost_command([*args, "--json"], capsys)
        assert status == 0, err
        return json.loads(out)

    by_suffix = run("ERKNet-3x1 3x1 3x1-AB", "--growth-rate", "12")
    by_flags = run("ERKNet-3x1 3x1 3x1", "--growth-rate", "12", "--attention", "--bottleneck", "4k")
    assert by_suffix == by_flags


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["ERKNet-6x1 6y1"], "unknown model name"),
        (["ERKNet-0x1 1x1 1x1"], "stages"),
        (["IRKNet-3x1 3x1 3x1", "--m", "2"], "clique form"),
        (["ERKNet-3x1 3x1 3x1", "--growth-rate", "12,12"], "k: 2 values for 3 periods"),
        (["ERKNet-3x1 3x1 3x1", "--dataset", "mnist"], "invalid choice"),
        (["ERKNet-3x1 3x1 3x1", "--bottleneck", "wide"], "neck"),
        (["RKCNN-E-3_3_3", "--u", "2"], "RKCNN-E"),
        (["RKCNN-I-3_3_3", "--u", "0"], "u >= 1 in at least one period"),
        (["PreActResNet-20", "--dropout", "0.2"], "unknown knob"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args: list[str], fragment: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _cost_command(args, capsys)  # anything but the one line would raise here
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], err


def test_bad_input_to_the_real_command_is_one_line_and_status_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "rksearch.cost", "ERKNet-6x1 6y1"], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (2, "")
    [line] = proc.stderr.strip().splitlines()  # no traceback: one line
    assert line.startswith("error:") and "unknown model name" in line


# ---- training memory ---------------------------------------------------------------------------

def saved_activation_bytes(model: nn.Module, batch: int, image_size: int) -> int:
    """What autograd keeps for backward once a training-mode forward of a random batch ends:
    each distinct storage once (as benchmarks/bench_memory.py counts), only those still held
    (what a dropped branch saved is freed in the forward), the model's weights and buffers left
    out (`Memory.parameters` holds those)."""
    saved: list[weakref.ref[torch.Tensor]] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        alias = tensor.detach()  # the tensor itself would form a cycle with its graph node: nothing freed
        saved.append(weakref.ref(alias))
        return alias

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model.train()(torch.randn(batch, 3, image_size, image_size))
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    held = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in (ref() for ref in saved)
            if t is not None}
    del output
    return sum(nbytes for pointer, nbytes in held.items() if pointer not in own)


#: every form and naming style, with and without bottleneck (B), attention (A), multiscale,
#: m > 1, dropout, the ImageNet stem, and one-stage update steps (whose updater reads y alone and
#: overwrites stage I and its own earlier iterations, so that the forward frees what those saved)
MEMORY_MODELS = [
    ("ERKNet-2x1 2x1 2x1", dict(k=4)),
    ("ERKNet-2x2 1x1 2x1-AB", dict(k=4, m=2)),
    ("ERKNet-2x1 1x1 1x1 1x1", dict(k=4, dataset="imagenet")),
    ("IRKNet-3x1 2x1 2x1", dict(k=4, multiscale=False)),
    ("IRKNet-2x1 3x1 2x1-AB", dict(k=4, dropout=0.2)),
    ("RKCNN-E-2_1_2", dict(k=4, attention=True)),
    ("RKCNN-I-1_2_3", dict(k=4, u=2, neck=2)),
    ("RKCNN-R-1_1_2", dict(k=4, m=2, u=(3, 1, 2), dropout=0.2)),
    ("RKCNN-R-2_2_1", dict(k=4, u=(1, 2, 1), dropout=0.2, multiscale=False)),
    ("RKCNN-I-1_2_1", dict(k=4, u=(0, 2, 1), dropout=0.2)),  # u = 0 in a one-stage period: nothing overwritten
]


@pytest.mark.parametrize("name, knobs", MEMORY_MODELS, ids=[name for name, _ in MEMORY_MODELS])
def test_closed_form_activations_equal_what_autograd_saves(name: str, knobs: dict) -> None:
    """Exact, to the byte, at two batch sizes (so both the per-image and the per-batch parts are
    right).  CPU float32: there a dropout mask is a float per value (CUDA's fused dropout keeps a
    byte, so on a GPU the estimate is that much above)."""
    spec = parse(name, **knobs)
    size = 64 if spec.stem == "imagenet" else 32
    model = build(spec)
    for batch in (1, 3):
        assert training_memory(spec, batch, size).activations == saved_activation_bytes(model, batch, size)


def test_closed_form_activations_equal_what_autograd_saves_for_random_specs() -> None:
    rng = random.Random(1802)
    for _ in range(100):
        spec = random_spec(rng)
        size, batch = (64 if spec.stem == "imagenet" else 32), rng.randint(1, 3)
        assert training_memory(spec, batch, size).activations == saved_activation_bytes(build(spec), batch, size), \
            spec.canonical


def test_weights_gradients_and_momentum_equal_a_real_sgd_step() -> None:
    """After one step of the optimiser of `rksearch.training.loop` (SGD, Nesterov momentum): the
    model's tensors, its gradients and SGD's state hold exactly what the estimate says; without
    momentum SGD keeps none.
    (RKCNN-R-2_1_1's one-stage periods overwrite stage I unread: its weights get no gradient.)"""
    for name, knobs in (("IRKNet-2x1 2x1 2x1-AB", dict(k=4)), ("RKCNN-R-2_1_1", dict(k=4, u=2)),
                        ("ERKNet-2x1 1x1 2x1-AB", dict(k=4, m=2, dropout=0.2)), ("DenseNet-BC-40", dict(k=4))):
        for momentum in (0.9, 0.0):
            model = build(name, **knobs)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum, nesterov=momentum > 0,
                                        weight_decay=1e-4)
            model(torch.randn(2, 3, 32, 32)).sum().backward()
            optimizer.step()
            estimate = training_memory(name, 2, 32, momentum=momentum > 0, **knobs)
            assert estimate.parameters == sum(t.nbytes for t in model.state_dict().values())
            assert estimate.gradients == sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
            buffers = [s["momentum_buffer"] for s in optimizer.state.values() if s.get("momentum_buffer") is not None]
            assert estimate.optimizer == sum(b.nbytes for b in buffers) == (estimate.gradients if momentum else 0)
            assert estimate.total == (estimate.parameters + estimate.gradients + estimate.optimizer
                                      + estimate.activations)


@pytest.mark.parametrize("name, knobs", [("DenseNet-BC-40", dict(k=4)), ("CliqueNet-T12-ABC", dict(k=4)),
                                         ("PreActResNet-20", {}), ("LM-ResNet-20", {})])
def test_baselines_are_traced_on_the_meta_device_exactly(name: str, knobs: dict) -> None:
    """A baseline has no closed form: its estimate is one forward on meta tensors, which must
    save what the real model saves."""
    assert training_memory(name, 3, 32, **knobs).activations == saved_activation_bytes(build(name, **knobs), 3, 32)


def test_memory_efficient_models_save_less_than_the_estimate() -> None:
    """The estimate is for plain models; with recomputation (runtime.memory_efficient) autograd
    saves less, so there it is an upper bound.  (Checkpointing also holds each recomputed part's
    inputs, which the hooks do not see: the stage outputs, fewer bytes than the concatenations
    and BN inputs it no longer keeps.)"""
    for name, knobs in (("ERKNet-3x1 3x1 3x1", {}), ("IRKNet-3x1 3x1 3x1-B", {}), ("RKCNN-I-3_3_3", dict(u=1))):
        spec = parse(name, k=8, **knobs)
        estimate = training_memory(spec, 4).activations
        assert saved_activation_bytes(build(spec, memory_efficient=True), 4, 32) < estimate
        assert saved_activation_bytes(build(spec), 4, 32) == estimate


def test_memory_grows_with_the_batch_and_the_image_not_the_weights() -> None:
    spec = parse("ERKNet-3x1 3x1 3x1", k=12)
    small, large, wide = training_memory(spec, 8), training_memory(spec, 32), training_memory(spec, 8, 64)
    assert small.parameters == large.parameters == wide.parameters
    assert small.gradients == small.optimizer == 4 * count(spec).params < small.parameters  # + BN running stats
    assert 3.9 < large.activations / small.activations < 4.0  # BN's per-batch statistics do not grow
    assert 3.9 < wide.activations / small.activations < 4.1
    assert isinstance(small, Memory) and str(small).endswith("activations)")


def test_human_bytes_uses_the_decimal_units_budgets_are_written_in() -> None:
    assert human_bytes(21_300_000_000) == "21.3 GB"
    assert human_bytes(1_234_567, compact=True) == "1.2M"
    assert human_bytes(512) == "512 B"
    assert human_bytes(4e12, compact=True) == "4.0T"


def test_cli_batch_size_adds_the_memory_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    expected = training_memory(parse("ERKNet-6x1 6x1 6x1", k=36), 64)
    assert main(["ERKNet-6x1 6x1 6x1", "-k", "36", "--batch-size", "64", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["batch_size"] == 64 and row["memory"] == {
        "parameters": expected.parameters, "gradients": expected.gradients, "optimizer": expected.optimizer,
        "activations": expected.activations, "total": expected.total}
    assert main(["ERKNet-6x1 6x1 6x1", "-k", "36", "--batch-size", "64"]) == 0
    memory_line = capsys.readouterr().out.splitlines()[4]
    assert memory_line.startswith("memory") and f"{expected.total:,}" in memory_line
    assert f"{human_bytes(expected.total)} to train at batch 64" in memory_line
    assert main(["ERKNet-6x1 6x1 6x1", "-k", "36", "--json"]) == 0
    assert "memory" not in json.loads(capsys.readouterr().out)


def test_cli_num_classes_and_dropout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["RKCNN-I-3_3_3", "-k", "12", "--u", "0,1,1", "--num-classes", "100", "--dropout", "0.2",
                 "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    spec = parse("RKCNN-I-3_3_3", k=12, u=(0, 1, 1), num_classes=100, dropout=0.2)
    assert row["canonical"] == spec.canonical and row["params"] == count(spec).params
    assert "num_classes=100" in row["canonical"] and "dropout=0.2" in row["canonical"]
    assert main(["DenseNet-BC-40", "-k", "12", "--num-classes", "100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == count("DenseNet-BC-40", k=12, num_classes=100).params


@pytest.mark.parametrize("args, hint", [
    (["--bottleneck", "128", "-k", "32"], "divide it by k: 4 for 128 channels at k=32"),
    (["--bottleneck", "128"], "divide it by k: 4 for 4k"),
    (["--bottleneck", "9k", "-k", "12"], "at most 8"),
])  # fmt: skip
def test_cli_refuses_a_bottleneck_that_looks_like_channels(args: list[str], hint: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`--bottleneck` is a multiple of k: 128 was probably meant as 128 channels (4k at k=32),
    and would otherwise build a 199M-param model.  The spec refuses it, and the command prints
    the spec's message as the one ``error:`` line every rksearch command prints."""
    assert main(["RKCNN-I-3_3_3", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: neck: ") and err.count("\n") == 1 and hint in err, err
    assert main(["RKCNN-I-3_3_3", "--bottleneck", "8", "-k", "4"]) == 0  # the largest multiple taken


def test_cli_knob_values_are_read_as_a_name_reads_its_knob_list(capsys: pytest.CaptureFixture[str]) -> None:
    """The command line's text values go to the family as they are: per-period lists become
    tuples, and a fraction where an integer belongs is refused rather than truncated."""
    assert main(["ERKNet-2x1 2x1 2x1", "-k", "4,6,8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["canonical"] == parse("ERKNet-2x1 2x1 2x1 (k=4,6,8)").canonical
    assert main(["RKCNN-I-2_2_2", "-k", "4", "--r", "1.5"]) == 2
    assert capsys.readouterr().err == "error: r: must be integers, got 1.5\n"
