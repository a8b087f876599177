"""What the baseline specs share beyond the knob rules of every family (`rksearch.models.knobs`):
the data-set check of a fixed stem, and validation of the knobs they take.

Every baseline spec is a frozen dataclass with ``family`` (its registered family), ``name``
(the paper's name), ``canonical`` (name plus every knob, so that parsing it gives the spec
back) and ``default_image_size``; its family (`rksearch.models.registry.Family`) builds it.
"""

from __future__ import annotations

from typing import Any

from rksearch.models.knobs import DATASETS, SpecError, stem_and_classes


def num_classes(family: str, given: dict[str, Any], stem: str) -> int:
    """Classes from ``num_classes`` or else the data set; data set and stem must suit the family's input size.

    A baseline's stem is fixed by its name, so ``stem`` is only checked: a study can pass the
    same knobs to every family and still hear about a CIFAR form asked to take ImageNet input.
    """
    hint = ("for ImageNet use DenseNet-121/161/169/201" if stem == "cifar"
            else "for 32x32 data use a CIFAR form such as DenseNet-BC-100")
    dataset = given.get("dataset")
    if dataset is not None and DATASETS.get(dataset, ("",))[0] != stem:
        allowed = [name for name, (s, _) in DATASETS.items() if s == stem]
        raise SpecError(f"{family}: dataset {dataset!r} is not one of {', '.join(allowed)} ({hint})")
    asked, classes = stem_and_classes(given, stem)
    if asked != stem:
        raise SpecError(f"{family}: stem {asked!r} given, but this form has the {stem} stem ({hint})")
    return as_int(family, "num_classes", classes, minimum=2)


def as_int(family: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{family}: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def as_dropout(family: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise SpecError(f"{family}: dropout must be a number in [0, 1), got {value!r}")
    return float(value)
