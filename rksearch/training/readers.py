"""On-disk readers backed by torchvision: CIFAR-10/100 batches, SVHN .mat files, ImageFolder trees.

A module of its own because importing torchvision costs about two seconds (it pulls in
torch._dynamo), which every trial worker and every CLI start would otherwise pay even for
data sets that never touch a file (digits, synthetic).  `rksearch.training.data` imports it lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from torchvision import datasets
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2 as T

if TYPE_CHECKING:
    from rksearch.training.data import Augment

__all__ = ["CIFAR10Files", "CIFAR100Files", "SVHNFiles", "ImageFolder", "folder_transforms"]


class _PresenceCheckedCIFAR:
    """torchvision's CIFAR reader with its md5 checks replaced by presence checks.

    The replacement is by data, not by code: the per-instance file lists carry no md5,
    which torchvision's own `check_integrity` takes as "the file exists".  Downloads and
    ``verify`` keep the class's official sums.
    """

    train_list: list[list[str]]
    test_list: list[list[str]]
    meta: dict[str, str]

    def __init__(self, root: Path, train: bool, download: bool = False, verify: bool = False) -> None:
        if not (download or verify):
            self.train_list = [[name, None] for name, _ in type(self).train_list]  # type: ignore[list-item]
            self.test_list = [[name, None] for name, _ in type(self).test_list]  # type: ignore[list-item]
            self.meta = {**type(self).meta, "md5": None}  # type: ignore[dict-item]
        super().__init__(root, train=train, download=download)  # type: ignore[call-arg]


class CIFAR10Files(_PresenceCheckedCIFAR, datasets.CIFAR10):
    """CIFAR-10 python batches (``cifar-10-batches-py/``), md5 checked only when asked."""


class CIFAR100Files(_PresenceCheckedCIFAR, datasets.CIFAR100):
    """CIFAR-100 python batches (``cifar-100-python/``), md5 checked only when asked."""


class SVHNFiles(datasets.SVHN):
    """SVHN ``{train,test}_32x32.mat``, md5 checked only when asked (see `_PresenceCheckedCIFAR`)."""

    def __init__(self, root: Path, split: str, download: bool = False, verify: bool = False) -> None:
        if not (download or verify):
            self.split_list = {key: [url, name, None] for key, (url, name, _) in type(self).split_list.items()}
        super().__init__(root, split=split, download=download)


def folder_transforms(augment: Augment, size: int) -> tuple[Callable, Callable]:
    """(train, eval) PIL -> uint8 tensor transforms; eval is the single centre crop."""
    resize = round(size * 256 / 224)
    to_tensor = T.PILToTensor()
    evaluate = T.Compose([T.RGB(), T.Resize(resize), T.CenterCrop(size), to_tensor])
    if augment == "imagenet":
        train = T.Compose([T.RGB(), T.RandomResizedCrop(size), T.RandomHorizontalFlip(),
                           T.ColorJitter(0.4, 0.4, 0.4), to_tensor])
    elif augment == "flip-crop":
        train = T.Compose([T.RGB(), T.Resize(resize), T.RandomCrop(size), T.RandomHorizontalFlip(), to_tensor])
    else:
        train = evaluate
    return train, evaluate
