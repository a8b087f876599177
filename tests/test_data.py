"""Data readers on small files written in the real on-disk formats, split policy, errors.

The files are written here the way the official archives lay them out (CIFAR python
pickles with a flat 3072-byte row per image in channel-major order, SVHN's MATLAB arrays
X[h, w, c, n] with label 10 for the digit 0, ImageFolder trees), and read back through
torchvision's own classes via `rksearch.training.data.load`.  torchvision checks the official md5
sums of CIFAR/SVHN files; `load` hands it file lists without sums (torchvision's
`check_integrity(path, md5=None)` is its documented presence check), and keeps the
official sums for downloads and for `verify: true` — tested below.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image

from rksearch.training.data import NORMALISATION, DataConfig, DataError, _holdout, flip_crop, load


def _pixels(n: int, offset: int) -> np.ndarray:
    """n distinct NHWC uint8 images; image i carries its id (offset + i) in pixel (0, 0, 0)."""
    rng = np.random.default_rng(offset)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(offset, offset + n, dtype=np.uint8)
    return images


def _normalised(nhwc: np.ndarray, dataset: str) -> torch.Tensor:
    """What `load` should yield for these images: NCHW, (x / 255 - mean) / std per channel."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALISATION[dataset])
    x = torch.from_numpy(nhwc).permute(0, 3, 1, 2).float() / 255
    return (x - mean) / std


def _cifar_rows(nhwc: np.ndarray) -> np.ndarray:
    """The official row layout: 1024 red, then 1024 green, then 1024 blue bytes, row-major."""
    return nhwc.transpose(0, 3, 1, 2).reshape(len(nhwc), 3072)


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root: Path, per_batch: int = 4, test: int = 6) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for b in range(1, 6):
        x, y = _pixels(per_batch, 10 * b), [(3 * b + i) % 10 for i in range(per_batch)]
        _pickle(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5",
                                             "labels": y, "data": _cifar_rows(x), "filenames": []})
        train_x.append(x)
        train_y += y
    test_x, test_y = _pixels(test, 200), [(7 * i) % 10 for i in range(test)]
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_y,
                                    "data": _cifar_rows(test_x), "filenames": []})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072})
    return np.concatenate(train_x), train_y, test_x, test_y


def _validation(cfg: DataConfig, split: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
    data = load(cfg, seed=0)
    batches = list(getattr(data, split).batches(0))
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def _training(cfg: DataConfig, seed: int = 0, epoch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    data = load(cfg, seed=seed)
    batches = list(data.train.batches(epoch))
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def test_cifar10_pickle_batches_read_through_torchvision(tmp_path: Path) -> None:
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path)
    # the paper's protocol: all of train trains, the test set validates (and reports)
    cfg = DataConfig(dataset="cifar10", root=tmp_path, eval_batch_size=4, validation="test")
    images, labels = _validation(cfg)
    assert labels.tolist() == test_y
    data = load(cfg, seed=0)
    assert data.test is data.val
    torch.testing.assert_close(images, _normalised(test_x, "cifar10"))
    # training: all 20 images of the five batches, in a seeded shuffled order
    images, labels = _training(cfg)
    expected = _normalised(train_x, "cifar10")
    order = [int(round(v)) for v in (images[:, 0, 0, 0] * NORMALISATION["cifar10"][1][0]
                                     + NORMALISATION["cifar10"][0][0]).mul(255).tolist()]
    rows = [(i // 10 - 1) * 4 + i % 10 for i in order]  # batch b holds ids 10b, 10b + 1, ...
    assert sorted(rows) == list(range(20))
    torch.testing.assert_close(images, expected[rows])
    assert labels.tolist() == [train_y[r] for r in rows]


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train_x, test_x = _pixels(5, 0), _pixels(3, 100)
    _pickle(folder / "train", {"fine_labels": [99, 0, 42, 7, 13], "coarse_labels": [0] * 5,
                               "data": _cifar_rows(train_x), "filenames": []})
    _pickle(folder / "test", {"fine_labels": [5, 77, 98], "coarse_labels": [1] * 3,
                              "data": _cifar_rows(test_x), "filenames": []})
    _pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)],
                              "coarse_label_names": [f"s{i}" for i in range(20)]})
    cfg = DataConfig(dataset="cifar100", root=tmp_path)
    data = load(cfg, seed=0)
    # the default holdout: 10% of 5 rounds to one image, taken out of train for validation
    assert (data.num_classes, data.train.num_samples, data.val.num_samples) == (100, 4, 1)
    images, labels = _validation(cfg, "test")
    assert labels.tolist() == [5, 77, 98]
    torch.testing.assert_close(images, _normalised(test_x, "cifar100"))


def test_svhn_mat_files_and_label_ten_is_zero(tmp_path: Path) -> None:
    folder = tmp_path / "svhn"
    folder.mkdir()
    for split, n, offset in (("train", 6, 0), ("test", 4, 50)):
        x = _pixels(n, offset)
        y = np.array([[10], [1], [2], [10], [9], [3]][:n], dtype=np.uint8)  # SVHN: digit 0 is stored as 10
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": y})
    cfg = DataConfig(dataset="svhn", root=tmp_path)
    images, labels = _validation(cfg, "test")
    assert labels.tolist() == [0, 1, 2, 0]
    torch.testing.assert_close(images, _normalised(_pixels(4, 50), "svhn"))


def _write_folder(root: Path, counts: dict[str, dict[str, int]]) -> None:
    for split, per_class in counts.items():
        for cls, n in per_class.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                value = 40 * i + (100 if cls == "dog" else 0)
                Image.new("RGB", (40, 30), (value, 10, 200)).save(root / split / cls / f"{i}.png")


def test_imagenet_folder_tree(tmp_path: Path) -> None:
    _write_folder(tmp_path / "imagenet", {"train": {"cat": 3, "dog": 2}, "val": {"cat": 1, "dog": 2}})
    cfg = DataConfig(dataset="imagenet", root=tmp_path, image_size=16, num_workers=0, eval_batch_size=8,
                     validation="test")
    data = load(cfg, seed=0)
    assert (data.num_classes, data.stem, data.train.num_samples) == (2, "cifar", 5)
    images, labels = _validation(cfg)
    assert labels.tolist() == [0, 1, 1]  # classes sorted by folder name: cat 0, dog 1
    assert images.shape == (3, 3, 16, 16)
    # uniform images stay uniform through resize + centre crop: check the red channel's value
    mean, std = NORMALISATION["imagenet"]
    red = images[:, 0].mean((1, 2)) * std[0] + mean[0]
    torch.testing.assert_close(red * 255, torch.tensor([0.0, 100.0, 140.0]), atol=0.5, rtol=0)


def test_imagenet_holdout_validates_on_train_images_with_the_eval_transform(tmp_path: Path) -> None:
    _write_folder(tmp_path / "imagenet", {"train": {"cat": 3, "dog": 2}, "val": {"cat": 1, "dog": 1}})
    cfg = DataConfig(dataset="imagenet", root=tmp_path, image_size=16, num_workers=0, eval_batch_size=8,
                     validation="holdout", holdout_fraction=0.4)
    data = load(cfg, seed=0)
    assert (data.train.num_samples, data.val.num_samples) == (3, 2)
    images, _ = _validation(cfg)
    # the centre crop of uniform images, identical on every read (no random crop, no flip)
    torch.testing.assert_close(images, _validation(cfg)[0])
    mean, std = NORMALISATION["imagenet"]
    red = (images[:, 0].mean((1, 2)) * std[0] + mean[0]) * 255
    assert set(red.round().tolist()) <= {0.0, 40.0, 80.0, 100.0, 140.0}


def test_holdout_is_seeded_disjoint_and_covers_train(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=10, test=2)

    def ids(cfg: DataConfig) -> tuple[set[int], set[int]]:
        mean, std = NORMALISATION["cifar10"][0][0], NORMALISATION["cifar10"][1][0]
        def to_ids(x: torch.Tensor) -> list[int]:
            return [int(round(v)) for v in ((x[:, 0, 0, 0] * std + mean) * 255).tolist()]
        train, val = to_ids(_training(cfg)[0]), to_ids(_validation(cfg)[0])
        assert len(set(train)) == len(train) and len(set(val)) == len(val)
        return set(train), set(val)

    cfg = DataConfig(dataset="cifar10", root=tmp_path, validation="holdout", holdout_fraction=0.2)
    train, val = ids(cfg)
    everything = {10 * b + i for b in range(1, 6) for i in range(10)}
    assert len(val) == 10 and not train & val and train | val == everything
    assert ids(cfg) == (train, val)  # same split seed: same split
    other = ids(cfg.model_copy(update={"split_seed": 1}))
    assert other[1] != val and not other[0] & other[1]


def test_holdout_is_stratified_by_class_and_the_test_set_stays_apart(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=10, test=2)  # 50 training images, labels (i * 3) % 10 per batch
    cfg = DataConfig(dataset="cifar10", root=tmp_path, holdout_fraction=0.2)
    assert cfg.validation == "holdout"  # the default: validation selects, test reports
    data = load(cfg, seed=0)
    train_labels = torch.cat([b[1] for b in data.train.batches(1)])
    val_labels = torch.cat([b[1] for b in data.val.batches(0)])
    test_labels = torch.cat([b[1] for b in data.test.batches(0)])
    # every class has 5 of the 50 images; a stratified 20% holds out exactly one of each
    assert sorted(val_labels.tolist()) == list(range(10))
    assert len(train_labels) == 40 and len(test_labels) == 2
    assert data.test is not data.val


def test_stratified_holdout_shares_a_rounded_total_by_class_size() -> None:
    labels = torch.tensor([0] * 7 + [1] * 2 + [2] * 1)
    keep, held = _holdout(labels, 0.3, seed=5)
    assert len(held) == 3 and not set(keep.tolist()) & set(held.tolist())
    assert sorted(labels[held].tolist()).count(0) == 2  # 7 * 0.3 = 2.1 -> 2; the 3rd by largest remainder
    assert torch.equal(_holdout(labels, 0.3, seed=5)[1], held)


def test_a_holdout_that_empties_a_class_of_training_images_says_so(caplog) -> None:
    with caplog.at_level("WARNING", logger="rksearch.training.data"):
        _holdout(torch.tensor([0] * 8 + [1]), 0.5, seed=0)  # 4 of class 0 held out: both classes train
    assert "holds out every image" not in caplog.text
    with caplog.at_level("WARNING", logger="rksearch.training.data"):
        keep, _ = _holdout(torch.tensor([0] * 9 + [1]), 0.9, seed=0)  # 9 of 10 held out, the 1 among them
    assert len(keep) == 1 and "holds out every image of class(es) [1]" in caplog.text


def test_digits_holds_out_of_its_training_part_and_keeps_its_test_split() -> None:
    holdout = load(DataConfig(dataset="digits"), seed=0)
    paper = load(DataConfig(dataset="digits", validation="test"), seed=0)
    assert holdout.test.num_samples == paper.test.num_samples == 360
    assert holdout.train.num_samples + holdout.val.num_samples == paper.train.num_samples == 1797 - 360
    # the same 360 images (normalised with each protocol's own training statistics)
    test = torch.cat([b[1] for b in holdout.test.batches(0)])
    assert torch.equal(test, torch.cat([b[1] for b in paper.test.batches(0)]))


def test_limit_test_belongs_to_the_holdout_protocol() -> None:
    data = load(DataConfig(dataset="digits", limit_test=50, limit_val=20), seed=0)
    assert (data.val.num_samples, data.test.num_samples) == (20, 50)
    with pytest.raises(ValueError, match="limit_test: with validation: test"):
        DataConfig(dataset="digits", validation="test", limit_test=50)


def test_training_order_depends_on_seed_and_epoch_only(tmp_path: Path) -> None:
    cfg = DataConfig(dataset="synthetic", train_size=40, val_size=8, batch_size=7)
    first = _training(cfg, seed=3, epoch=2)[1]
    assert torch.equal(first, _training(cfg, seed=3, epoch=2)[1])
    assert not torch.equal(first, _training(cfg, seed=3, epoch=1)[1])
    assert sorted(first.tolist()) == sorted(_training(cfg, seed=4, epoch=2)[1].tolist())


def test_flip_crop_matches_per_image_pad_and_slice() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 8, 8), generator=gen, dtype=torch.uint8)
    flips = torch.tensor([True, False, True, False, True])
    offsets = torch.randint(0, 9, (5, 2), generator=gen)
    out = flip_crop(images, flips, offsets, pad=4)
    for i in range(5):
        padded = F.pad(images[i], (4, 4, 4, 4))
        r, c = offsets[i].tolist()
        crop = padded[:, r:r + 8, c:c + 8]
        assert torch.equal(out[i], crop.flip(-1) if flips[i] else crop)


def test_missing_data_names_path_and_fix(tmp_path: Path) -> None:
    for dataset, folder in (("cifar10", "cifar-10-batches-py"), ("svhn", "svhn"), ("imagenet", "imagenet")):
        with pytest.raises(DataError) as err:
            load(DataConfig(dataset=dataset, root=tmp_path / "nowhere"), seed=0)
        message = str(err.value)
        assert str(tmp_path / "nowhere" / folder) in message and "data.root" in message
        if dataset != "imagenet":
            assert "data.download: true" in message


def test_verify_checks_the_official_md5(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    with pytest.raises(DataError, match="md5"):
        load(DataConfig(dataset="cifar10", root=tmp_path, verify=True), seed=0)


def test_config_rejects_options_of_other_data_sets() -> None:
    with pytest.raises(ValueError, match="synthetic"):
        DataConfig(dataset="cifar10", num_classes=5)
    with pytest.raises(ValueError, match="download"):
        DataConfig(dataset="digits", download=True)
    with pytest.raises(ValueError, match="extra"):
        DataConfig(dataset="cifar10", shuffle=True)  # type: ignore[call-arg]
    assert DataConfig(dataset="imagenet").augment == "imagenet" and DataConfig().augment == "none"


def test_download_happens_under_a_file_lock_in_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parallel trials on one node must not download into the same folder at once."""
    import filelock

    from rksearch.training import readers

    calls: list[bool] = []

    class Reader(readers.CIFAR10Files):  # keeps the class attributes `_read_arrays` reads
        def __init__(self, root: Path, train: bool, download: bool = False, verify: bool = False) -> None:
            other = filelock.FileLock(str(tmp_path / ".cifar10.lock"))
            with pytest.raises(filelock.Timeout):  # a second process-like holder cannot get in
                other.acquire(timeout=0)
            calls.append(download)
            self.data, self.targets = _pixels(2, 0), [1, 2]

    monkeypatch.setattr(readers, "CIFAR10Files", Reader)
    data = load(DataConfig(dataset="cifar10", root=tmp_path, download=True), seed=0)
    assert calls == [True, True] and data.train.num_samples + data.val.num_samples == 2
    filelock.FileLock(str(tmp_path / ".cifar10.lock")).acquire(timeout=0)  # released afterwards
