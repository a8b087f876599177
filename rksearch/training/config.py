"""What one trial is: its model, optimiser, data and runtime as one typed, validated config.

Kept apart from the loop that runs it because the study schema (`rksearch.search.schema`) and the
planner build these without training anything; `TrialConfig.model_validate` takes the plain dicts
Ray passes to a worker.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rksearch.training.data import DataConfig
from rksearch.training.runtime import RuntimeConfig


class ModelConfig(BaseModel):
    """A model name plus the knobs of `rksearch.models.parse` (k, m, r, u, neck, dropout, ...).

    The stem and the number of classes come from the data set unless the knobs set them.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    knobs: dict[str, Any] = Field(default_factory=dict)


class OptimConfig(BaseModel):
    """SGD with Nesterov momentum and a per-epoch schedule.

    The defaults are the RKCNN paper's CIFAR recipe: 300 epochs at lr 0.1, divided by 10 at half
    and three quarters of the epochs, weight decay 1e-4, Nesterov momentum 0.9.
    """

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(1e-4, ge=0)
    epochs: int = Field(300, ge=1)
    schedule: Literal["step", "cosine"] = "step"
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75],
                                    description="step schedule: fractions of `epochs` (paper: 150, 225 of 300)")
    gamma: float = Field(0.1, gt=0, le=1)

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0 < f <= 1 for f in value) or value != sorted(value):
            raise ValueError(f"milestones: increasing fractions of the epochs in (0, 1], got {value}")
        return value

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimConfig:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: needs momentum > 0")
        return self

    def milestone_epochs(self) -> list[int]:
        return [max(1, round(f * self.epochs)) for f in self.milestones]


class TrialConfig(BaseModel):
    """Everything one trial needs; `model_validate` takes the plain dicts Ray passes around."""

    model_config = ConfigDict(extra="forbid")

    model: ModelConfig
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    seed: int = 0

    @model_validator(mode="after")
    def _same_dataset(self) -> TrialConfig:
        named = self.model.knobs.get("dataset")
        if named is not None and named != self.data.dataset:
            raise ValueError(f"model.knobs.dataset is {named!r} but data.dataset is {self.data.dataset!r}")
        return self


__all__ = ["ModelConfig", "OptimConfig", "TrialConfig"]
