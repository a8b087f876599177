"""Costs: the paper's worked example, closed form vs traced count, and the CLI."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch

from rksearch.cost import Cost, closed_form, count, main, trace
from rksearch.models import build, parse

from specgen import random_spec

# rkcnn.md section 6: paper Table 1, ERKNet on CIFAR-10, k = 36, m = 1, multiscale
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


def test_table1_erknet_through_cli() -> None:
    for name, gflops, mparams in TABLE1_ERKNET:
        out = subprocess.run(
            [sys.executable, "-m", "rksearch.cost", name, "--growth-rate", "36", "--dataset", "cifar10", "--json"],
            capture_output=True, text=True, check=True,
        ).stdout
        row = json.loads(out)
        assert row["name"] == name
        assert round(row["flops"] / 1e9, 2) == gflops and round(row["params"] / 1e6, 2) == mparams
        assert row["macs"] * 2 == row["flops"]


def test_hand_count_of_smallest_table1_model() -> None:
    # ERKNet-6x1 6x1 6x1, k=36, counted by hand from rkcnn.md section 2-3:
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
    for _ in range(200):
        spec = random_spec(rng)
        kinds.add((spec.form, spec.solver, spec.bottleneck, spec.stem))
        size = 64 if spec.stem == "imagenet" else 32
        assert closed_form(spec, size) == trace(build(spec), size), spec.canonical
    assert {kind[0] for kind in kinds} == {"explicit", "clique", "update"}
    assert len(kinds) >= 10


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


def test_cli_suffix_and_knobs_agree() -> None:
    def run(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "rksearch.cost", *args, "--json"],
                             capture_output=True, text=True, check=True).stdout
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
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args: list[str], fragment: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "rksearch.cost", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
