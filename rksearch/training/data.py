"""Data for one trial: CIFAR-10/100, SVHN, ImageNet folders, scikit-learn digits, synthetic.

Every data set ends up as three `BatchSource`s (train, validation, test) that yield normalised
float batches on the trial's device, seeded per epoch, so that a resumed trial sees exactly
the batches an uninterrupted one would have seen.

Validation selects, test reports: by default the validation split is a stratified holdout of
the training set (`split_seed`, the same images for every trial of a study), and the official
test set is read only once a trial has finished (`rksearch.training.loop`).  A study reproducing the
paper's protocol sets ``validation: test`` and is then marked "selected on test" everywhere.

Small data sets (all but ImageNet) are held in memory as one uint8 tensor on the trial's
device; batches are cut, augmented and normalised there.  A CPU trial pays no per-image
PIL/DataLoader cost and a GPU trial copies its data once.  ImageNet goes through
torchvision's ImageFolder and DataLoader workers (decoding and crops per image) and meets
the same normalisation step on the device.

The on-disk formats are read by torchvision's own classes.  Their md5 checks are kept for
downloads and for ``verify: true``; otherwise only presence is checked, so trimmed or
re-packed copies in the official formats (and the tests' small files) load through the
very same parsing code.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from rksearch.errors import RksearchError
from rksearch.models.knobs import DATASETS

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("~/.cache/rksearch/data")
DatasetName = Literal["cifar10", "cifar100", "svhn", "imagenet", "digits", "synthetic"]
Augment = Literal["none", "flip-crop", "imagenet"]

#: per-channel (mean, std) of the training sets, in [0, 1] pixel units; the others are measured
NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
#: classes of the fixed data sets (synthetic: `num_classes`; imagenet: its class folders)
CLASSES = {name: classes for name, (_, classes) in DATASETS.items() if name != "imagenet"}
#: the digits data set has no official test split: a fixed one, the same for every trial
DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED = 360, 20240
#: padding of the flip + random-crop augmentation (4 px on 32 px, as the 2022 RKCNN code)
CROP_PAD = 4
SYNTHETIC_ONLY = ("num_classes", "train_size", "val_size")


class DataError(RksearchError, RuntimeError):
    """A data set cannot be read: missing or corrupt files, failed download, bad layout."""


class DataConfig(BaseModel):
    """The `data` section of a trial config.

    `validation` picks the split that selects (the search metric, the scheduler, the best
    epoch): by default a stratified `holdout_fraction` of train drawn with `split_seed` (fixed,
    so every trial of a study is scored on the same images whatever its training seed); or,
    as the paper did, the official test set itself, which then selects *and* reports.
    """

    model_config = ConfigDict(extra="forbid")

    dataset: DatasetName = "cifar10"
    root: Path = DEFAULT_ROOT
    download: bool = False
    verify: bool = Field(False, description="check the official md5 sums of the files (always done on download)")
    validation: Literal["holdout", "test"] = Field(
        "holdout", description="holdout: a stratified split of train selects and the test set reports; "
                               "test: the test set does both (the paper's protocol: say so)")
    holdout_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = 0
    augment: Augment | None = Field(None, description="default: 'imagenet' for imagenet, else 'none' (the paper)")
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    num_workers: int | None = Field(None, ge=0, description="DataLoader workers (imagenet); default: the trial's CPUs")
    limit_train: int | None = Field(None, ge=1)
    limit_val: int | None = Field(None, ge=1)
    limit_test: int | None = Field(None, ge=1)
    image_size: int | None = Field(None, ge=8, description="synthetic and imagenet only; default 32 / 224")
    num_classes: int = Field(10, ge=2, description="synthetic only")
    train_size: int = Field(1024, ge=1, description="synthetic only")
    val_size: int = Field(256, ge=1, description="synthetic only: the size of its test set (and, with "
                                                 "validation: test, of the validation one)")

    @field_validator("root")
    @classmethod
    def _expand(cls, root: Path) -> Path:
        return root.expanduser()

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        # a full dump of a config (all fields) must validate again: only non-default values count
        wrong = [name for name in SYNTHETIC_ONLY
                 if getattr(self, name) != type(self).model_fields[name].default]
        if wrong and self.dataset != "synthetic":
            raise ValueError(f"{', '.join(wrong)}: options of the synthetic data set, not of {self.dataset}")
        if self.image_size is not None and self.dataset not in ("synthetic", "imagenet"):
            raise ValueError(f"image_size: {self.dataset} images are 32x32; only synthetic and imagenet take a size")
        if self.download and self.dataset not in ("cifar10", "cifar100", "svhn"):
            raise ValueError(f"download: only cifar10, cifar100 and svhn can be downloaded, not {self.dataset}")
        if self.validation == "test" and self.limit_test is not None:
            raise ValueError("limit_test: with validation: test one split selects and reports; limit it with limit_val")
        if self.augment is None:
            self.augment = "imagenet" if self.dataset == "imagenet" else "none"
        elif self.augment == "imagenet" and self.dataset != "imagenet":
            raise ValueError("augment: 'imagenet' (scale/aspect crops and colour) is for the imagenet data set; "
                             "use 'flip-crop' or 'none'")
        return self

    @property
    def size(self) -> int:
        """Side of the images the model sees."""
        return self.image_size or (224 if self.dataset == "imagenet" else 32)


class BatchSource(Protocol):
    """An epoch-seeded stream of (normalised float images, int64 labels) on the device."""

    num_samples: int

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]: ...


@dataclass
class TrialData:
    """The trial's splits; `val` is `test` itself under ``validation: test``."""

    train: BatchSource
    val: BatchSource
    test: BatchSource
    num_classes: int
    stem: Literal["cifar", "imagenet"]
    image_size: int


def load(cfg: DataConfig, seed: int, device: torch.device | str = "cpu") -> TrialData:
    """Read `cfg.dataset` and return its train, validation and test batch sources on `device`.

    `seed` (the trial's) orders the training batches and draws their augmentation.
    """
    device = torch.device(device)
    if cfg.dataset == "imagenet":
        return _load_folder(cfg, seed, device)
    train, test = _read_arrays(cfg)
    if cfg.validation == "holdout":
        keep, held = _holdout(train[1], cfg.holdout_fraction, cfg.split_seed)
        train, val = _take(train, keep), _take(train, held)
        val = _take(val, _subset(len(val[1]), cfg.limit_val, cfg.split_seed))
        test = _take(test, _subset(len(test[1]), cfg.limit_test, cfg.split_seed))
    else:  # the test set selects and reports: one split, limited by limit_val
        val = test = _take(test, _subset(len(test[1]), cfg.limit_val, cfg.split_seed))
    train = _take(train, _subset(len(train[1]), cfg.limit_train, cfg.split_seed))
    images, labels = train
    mean, std = NORMALISATION.get(cfg.dataset) or _measure(images)
    normalise = Normalise(mean, std, device)
    log.info("%s: %d training, %d validation (%s) and %d test images", cfg.dataset, len(labels), len(val[1]),
             cfg.validation, len(test[1]))
    val_batches = TensorBatches(*val, cfg.eval_batch_size, normalise, device)
    return TrialData(
        train=TensorBatches(*train, cfg.batch_size, normalise, device, shuffle=True,
                            flip_crop=cfg.augment == "flip-crop", seed=seed),
        val=val_batches,
        test=val_batches if val is test else TensorBatches(*test, cfg.eval_batch_size, normalise, device),
        num_classes=cfg.num_classes if cfg.dataset == "synthetic" else CLASSES[cfg.dataset],
        stem=stem_for(cfg.size),
        image_size=cfg.size,
    )


def stem_for(size: int) -> Literal["cifar", "imagenet"]:
    """The model stem for images of this side: the 7x7/2 + pool stem would shrink small images
    (e.g. 32 px ImageNet variants) to nothing, so below 64 px the 3x3 CIFAR stem is used."""
    return "imagenet" if size >= 64 else "cifar"


# ---- batches ----------------------------------------------------------------------------


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator for (seed, epoch): well mixed, and needs no state in checkpoints."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


class Normalise:
    """uint8 NCHW batch -> float, per-channel (x / 255 - mean) / std, on the device."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> None:
        std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, device=device).view(1, -1, 1, 1) / std_t

    def __call__(self, images: Tensor) -> Tensor:
        return images.float() * self.scale + self.shift


def flip_crop(images: Tensor, flip: Tensor, offsets: Tensor, pad: int = CROP_PAD) -> Tensor:
    """Random crop of the zero-padded images at `offsets` (n, 2), mirrored where `flip`.

    One gather for the whole batch: the crop window's row and column indices, with the
    columns reversed for the mirrored images.
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = offsets[:, :1] + torch.arange(h, device=images.device)
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


class TensorBatches:
    """Batches of an in-memory uint8 data set held on the device."""

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, normalise: Normalise,
                 device: torch.device, *, shuffle: bool = False, flip_crop: bool = False, seed: int = 0) -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size, self.normalise = batch_size, normalise
        self.shuffle, self.flip_crop, self.seed = shuffle, flip_crop, seed
        self.num_samples = len(labels)

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        n, device = self.num_samples, self.images.device
        gen = epoch_generator(self.seed, epoch)
        order = torch.randperm(n, generator=gen).to(device) if self.shuffle else torch.arange(n, device=device)
        if self.flip_crop:
            flips = (torch.rand(n, generator=gen) < 0.5).to(device)
            offsets = torch.randint(0, 2 * CROP_PAD + 1, (n, 2), generator=gen).to(device)
        for start in range(0, n, self.batch_size):
            index = order[start:start + self.batch_size]
            images = self.images[index]
            if self.flip_crop:
                images = flip_crop(images, flips[index], offsets[index])
            yield self.normalise(images), self.labels[index]


class LoaderBatches:
    """Batches of a map-style data set of uint8 tensors through DataLoader workers.

    A fresh DataLoader per epoch, its shuffle and its workers' seeds drawn from the
    (seed, epoch) generator, so epoch e is the same whether or not the trial was resumed.
    """

    def __init__(self, dataset: Dataset, batch_size: int, normalise: Normalise, device: torch.device, *,
                 workers: int, shuffle: bool = False, seed: int = 0) -> None:
        self.dataset, self.batch_size, self.normalise, self.device = dataset, batch_size, normalise, device
        self.workers, self.shuffle, self.seed = workers, shuffle, seed
        self.num_samples = len(dataset)  # type: ignore[arg-type]

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        loader = DataLoader(self.dataset, self.batch_size, shuffle=self.shuffle, num_workers=self.workers,
                            generator=epoch_generator(self.seed, epoch), pin_memory=self.device.type == "cuda")
        for images, labels in loader:
            yield (self.normalise(images.to(self.device, non_blocking=True)),
                   labels.to(self.device, non_blocking=True))


# ---- in-memory data sets ------------------------------------------------------------------

Split = tuple[Tensor, Tensor]  # uint8 images (N, 3, H, W), int64 labels (N,)


def _read_arrays(cfg: DataConfig) -> tuple[Split, Split]:
    """(train, official test) of an in-memory data set."""
    if cfg.dataset in ("cifar10", "cifar100", "svhn"):
        from rksearch.training import readers  # torchvision: imported only by trials that read these files
    if cfg.dataset in ("cifar10", "cifar100"):
        reader = readers.CIFAR10Files if cfg.dataset == "cifar10" else readers.CIFAR100Files
        folder = cfg.root / reader.base_folder
        required = [folder / name for name, _ in reader.train_list + reader.test_list]
        required.append(folder / reader.meta["filename"])
        train, test = _open(cfg, folder, required, lambda train: reader(cfg.root, train, cfg.download, cfg.verify))
        return _from_hwc(train.data, train.targets), _from_hwc(test.data, test.targets)
    if cfg.dataset == "svhn":
        folder = cfg.root / "svhn"
        required = [folder / readers.SVHNFiles.split_list[split][1] for split in ("train", "test")]
        train, test = _open(cfg, folder, required,
                            lambda train: readers.SVHNFiles(folder, "train" if train else "test", cfg.download, cfg.verify))
        return _from_chw(train.data, train.labels), _from_chw(test.data, test.labels)
    if cfg.dataset == "digits":
        return _digits()
    return _synthetic(cfg)


def _open(cfg: DataConfig, folder: Path, required: list[Path], reader: Callable[[bool], Any]) -> tuple[Any, Any]:
    """(train, test) readers of a downloadable data set, downloading under a file lock if allowed."""
    if cfg.download:
        cfg.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(cfg.root / f".{cfg.dataset}.lock"))
        try:
            with lock:  # parallel trials on one node: the first downloads, the others wait and read
                return reader(True), reader(False)
        except (OSError, RuntimeError) as exc:
            raise DataError(f"{cfg.dataset}: download into {folder} failed: {exc}") from exc
    missing = [str(p) for p in required if not p.is_file()]
    if missing:
        raise DataError(
            f"{cfg.dataset} not found under {folder}: missing {', '.join(missing)}. Either set "
            f"`data.download: true` (needs network), or put the official files there, or point "
            f"`data.root` at the directory that holds {folder.name}/ (now {cfg.root})."
        )
    try:
        return reader(True), reader(False)
    except RuntimeError as exc:
        raise DataError(f"{cfg.dataset} under {folder} does not pass the md5 check (verify: true): {exc}") from exc


def _from_hwc(images: Any, labels: Any) -> Split:
    """torchvision's NHWC uint8 arrays and label list -> our NCHW tensor pair."""
    return (torch.from_numpy(np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2))),
            torch.as_tensor(labels, dtype=torch.int64))


def _from_chw(images: Any, labels: Any) -> Split:
    """torchvision's SVHN arrays (NCHW view, int64 labels) -> our tensor pair."""
    return torch.from_numpy(np.ascontiguousarray(images)), torch.as_tensor(labels, dtype=torch.int64)


def _digits() -> tuple[Split, Split]:
    """scikit-learn's bundled 8x8 digits (1797 images, 16 grey levels) as 32x32 RGB.

    Bilinear upsampling to the CIFAR size lets the CIFAR-sized models run unchanged; the
    test split is a fixed seeded draw of `DIGITS_TEST_SIZE` images.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = torch.from_numpy(digits.images).float()[:, None] * (255.0 / 16.0)
    images = F.interpolate(grey, size=(32, 32), mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    return (images[train], labels[train]), (images[test], labels[test])


def _synthetic(cfg: DataConfig) -> tuple[Split, Split]:
    """Seeded images that a model can learn: a random prototype per class plus noise."""
    gen = torch.Generator().manual_seed(cfg.split_seed)
    size, classes = cfg.size, cfg.num_classes
    prototypes = torch.rand(classes, 3, size, size, generator=gen) * 255

    def draw(n: int) -> Split:
        labels = torch.randint(0, classes, (n,), generator=gen)
        noise = torch.randn(n, 3, size, size, generator=gen) * 64
        return (prototypes[labels] + noise).clamp(0, 255).to(torch.uint8), labels

    return draw(cfg.train_size), draw(cfg.val_size)


def _holdout(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(kept, held-out) indices, both sorted: a stratified, seeded `fraction` held out for validation.

    ``round(n * fraction)`` images (at least one) are held out, shared among the classes in
    proportion to their sizes (largest remainders first, ties in seeded order), so the
    holdout's class balance is the training set's.  The draw depends on `seed` and the labels.
    """
    n = len(labels)
    total = max(1, round(n * fraction))
    if total >= n:
        raise DataError(f"holdout_fraction {fraction} of {n} training images leaves no training images")
    gen = torch.Generator().manual_seed(seed)
    classes, sizes = torch.unique(labels, return_counts=True)
    quotas = sizes.double() * total / n
    counts = quotas.floor().long()
    by_remainder = torch.randperm(len(classes), generator=gen)
    by_remainder = by_remainder[torch.argsort((quotas - counts)[by_remainder], descending=True, stable=True)]
    counts[by_remainder[: total - int(counts.sum())]] += 1
    held_parts = []
    for label, count in zip(classes.tolist(), counts.tolist()):
        members = torch.nonzero(labels == label).flatten()
        held_parts.append(members[torch.randperm(len(members), generator=gen)[:count]])
    held = torch.cat(held_parts).sort().values
    emptied = [label for label, size, count in zip(classes.tolist(), sizes.tolist(), counts.tolist()) if count >= size]
    if emptied:
        log.warning("holdout_fraction %g of %d training images holds out every image of class(es) %s: "
                    "nothing of them is left to train on", fraction, n, emptied)
    keep = torch.ones(n, dtype=torch.bool)
    keep[held] = False
    return torch.nonzero(keep).flatten(), held


def _subset(n: int, limit: int | None, seed: int) -> Tensor | None:
    """Sorted indices of a seeded subset of `limit` of n images (for quick studies); None: all."""
    if limit is None or limit >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))[:limit].sort().values


def _take(data: Split, index: Tensor | None) -> Split:
    return data if index is None else (data[0][index], data[1][index])


def _measure(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (std floored for flat data)."""
    x = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).clamp_min(1e-3).tolist())


# ---- ImageNet-style folders ---------------------------------------------------------------


def _load_folder(cfg: DataConfig, seed: int, device: torch.device) -> TrialData:
    """``{root}/imagenet/{train,val}/<class>/<image>`` through ImageFolder and DataLoader workers."""
    from rksearch.training import readers
    from rksearch.training.runtime import trial_cpus

    folder = cfg.root / "imagenet"
    for split in ("train", "val"):
        if not (folder / split).is_dir():
            raise DataError(
                f"imagenet not found: {folder / split} is not a directory. ImageNet cannot be downloaded "
                f"automatically; put the train/ and val/ class folders (ImageFolder layout: "
                f"<split>/<class>/<image>) under {folder}, or point `data.root` at the directory holding imagenet/."
            )
    train_tf, eval_tf = readers.folder_transforms(cfg.augment or "imagenet", cfg.size)
    train = readers.ImageFolder(folder / "train", transform=train_tf)
    test: Dataset = readers.ImageFolder(folder / "val", transform=eval_tf)
    if test.classes != train.classes:  # type: ignore[attr-defined]
        raise DataError(f"imagenet: the class folders of {folder / 'val'} differ from those of {folder / 'train'}")
    train_set: Dataset = train
    if cfg.validation == "holdout":
        keep, held = _holdout(torch.as_tensor(train.targets), cfg.holdout_fraction, cfg.split_seed)
        held_out = copy.copy(train)  # the same file list, not a second walk of the tree
        held_out.transform = eval_tf
        val = _take_dataset(Subset(held_out, held.tolist()), _subset(len(held), cfg.limit_val, cfg.split_seed))
        train_set = Subset(train, keep.tolist())
        test = _take_dataset(test, _subset(len(test), cfg.limit_test, cfg.split_seed))  # type: ignore[arg-type]
    else:  # ImageNet's val/ folder is its test set: it selects and reports
        val = test = _take_dataset(test, _subset(len(test), cfg.limit_val, cfg.split_seed))  # type: ignore[arg-type]
    train_set = _take_dataset(train_set, _subset(len(train_set), cfg.limit_train, cfg.split_seed))  # type: ignore[arg-type]
    workers = cfg.num_workers if cfg.num_workers is not None else min(8, trial_cpus())
    normalise = Normalise(*NORMALISATION["imagenet"], device)
    val_batches = LoaderBatches(val, cfg.eval_batch_size, normalise, device, workers=workers)
    return TrialData(
        train=LoaderBatches(train_set, cfg.batch_size, normalise, device, workers=workers, shuffle=True, seed=seed),
        val=val_batches,
        test=val_batches if val is test else LoaderBatches(test, cfg.eval_batch_size, normalise, device, workers=workers),
        num_classes=len(train.classes),
        stem=stem_for(cfg.size),
        image_size=cfg.size,
    )


def _take_dataset(dataset: Dataset, index: Tensor | None) -> Dataset:
    return dataset if index is None else Subset(dataset, index.tolist())
