"""runtime.compile: training a torch.compile'd RKCNN matches eager, and the trainer compiles
exactly when the runtime says so (on CPU; inductor needs a C++ compiler)."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rksearch.models import build
from rksearch.training.loop import run_trial
from rksearch.training.runtime import (
    COMPILE_AUTO_MIN_EPOCHS,
    Runtime,
    RuntimeConfig,
    compiles,
)

#: fp32 on both sides; compiled kernels fuse and reorder reductions, so they differ from eager
#: in the last bits, and three SGD steps (lr 0.1) carry that into the weights: 1e-4 is ~100x
#: what we see and ~100x below what one wrong operation would give
TOLERANCE = 1e-4
STEPS = 3


def _train(compiled: bool) -> tuple[list[float], dict[str, torch.Tensor]]:
    """STEPS SGD steps of a one-period ERKNet (the smallest graph to compile) on fixed batches."""
    torch.manual_seed(0)
    model = build("ERKNet-2x1", k=4, dataset="cifar10")
    if compiled:
        model.compile()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    batches = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(STEPS):
        images = torch.randn(4, 3, 16, 16, generator=batches)
        labels = torch.randint(0, 10, (4,), generator=batches)
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_compiled_training_matches_eager() -> None:
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None and shutil.which("c++") is None:
        pytest.skip(f"torch.compile's CPU backend (inductor) needs a C++ compiler; neither {compiler} nor c++ is on PATH")
    torch._dynamo.reset()
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    try:
        compiled_losses, compiled_state = _train(compiled=True)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs_before, "nothing was compiled"
    finally:
        torch._dynamo.reset()
    eager_losses, eager_state = _train(compiled=False)
    assert len(set(eager_losses)) == STEPS  # the steps trained: each loss is a new one
    assert compiled_losses == pytest.approx(eager_losses, rel=TOLERANCE, abs=TOLERANCE)
    assert compiled_state.keys() == eager_state.keys()  # compiled in place: the same names, same checkpoints
    for name, value in eager_state.items():
        torch.testing.assert_close(compiled_state[name], value, rtol=TOLERANCE, atol=TOLERANCE, msg=name)


def test_auto_compiles_only_long_cuda_trials() -> None:
    cpu = Runtime(torch.device("cpu"), None, False, 1, False)
    cuda = Runtime(torch.device("cuda"), torch.bfloat16, True, 1, False)
    auto = RuntimeConfig(compile="auto")
    assert compiles(auto, cuda, COMPILE_AUTO_MIN_EPOCHS)
    assert not compiles(auto, cuda, COMPILE_AUTO_MIN_EPOCHS - 1)
    assert not compiles(auto, cpu, 10 * COMPILE_AUTO_MIN_EPOCHS)
    assert compiles(RuntimeConfig(compile="on"), cpu, 1)
    assert not compiles(RuntimeConfig(), cuda, 10 * COMPILE_AUTO_MIN_EPOCHS)  # the default is off


def test_yaml_on_and_off_read_as_booleans_are_accepted() -> None:
    assert RuntimeConfig.model_validate({"compile": True}).compile == "on"
    assert RuntimeConfig.model_validate({"compile": False}).compile == "off"
    with pytest.raises(ValueError):
        RuntimeConfig.model_validate({"compile": "sometimes"})


@pytest.mark.parametrize("setting, expected", [("on", 1), ("off", 0)])
def test_the_trainer_compiles_its_model_when_told(monkeypatch: pytest.MonkeyPatch, setting: str,
                                                   expected: int) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: calls.append(self))
    run_trial({"model": {"name": "ERKNet-1x1", "knobs": {"k": 4}},
               "data": {"dataset": "synthetic", "image_size": 8, "train_size": 16, "val_size": 8, "batch_size": 8},
               "optim": {"epochs": 1}, "runtime": {"device": "cpu", "threads": 1, "compile": setting}})
    assert len(calls) == expected
