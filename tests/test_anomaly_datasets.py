"""The bundled anomaly datasets, on small files written in their exact on-disk layouts:
StreetHazards (labels 1..14 on disk, shifted) and SMIYC-style anomaly-only labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segcheck import SegcheckError
from segcheck import config as segconfig
from segcheck import plugins as segplugins
from segcheck.data import EvalData
from segcheck.gates.registered import Gate, unmet_need
from segcheck.model import ModelUnderTest
from segcheck.target import Target
from segcheck_plugins import smiyc, streethazards
from segcheck_plugins.smiyc import CITYSCAPES_CLASSES, SMIYC
from segcheck_plugins.streethazards import StreetHazards
from tests.test_datasets import registry_of, write_png

SIZE = (4, 6)
OFFICIAL_CLASSES = (  # hendrycks/anomaly-seg create_dataset.py, on-disk value = index + 1
    "unlabeled",
    "building",
    "fence",
    "other",
    "pedestrian",
    "pole",
    "road line",
    "road",
    "sidewalk",
    "vegetation",
    "car",
    "wall",
    "traffic sign",
)


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- streethazards

SH_FOLDERS = {"train": "train/{kind}/training", "val": "train/{kind}/validation", "test": "test/{kind}/test"}


def write_sh(root: Path, split: str, town: str, name: str, mask: np.ndarray | None = None, seed: int = 0) -> None:
    """One StreetHazards image of ``split`` in ``town`` and, when ``mask`` is given, its annotation."""
    size = SIZE if mask is None else mask.shape[:2]
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    write_png(root / SH_FOLDERS[split].format(kind="images") / town / f"{name}.png", image)
    if mask is not None:
        write_png(root / SH_FOLDERS[split].format(kind="annotations") / town / f"{name}.png", mask.astype(np.uint8))


def sh_mask(low: int = 1, high: int = 13, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high + 1, SIZE)


@pytest.fixture
def sh_root(tmp_path) -> Path:
    """Two train images in one town, one val image, two test images in two towns."""
    write_sh(tmp_path, "train", "t1-3", "300", sh_mask(seed=1), seed=1)
    write_sh(tmp_path, "train", "t1-3", "100", sh_mask(seed=2), seed=2)
    write_sh(tmp_path, "val", "t4", "000", sh_mask(seed=3), seed=3)
    test_mask = sh_mask(seed=4)
    test_mask[0, :3] = 14
    write_sh(tmp_path, "test", "t5", "000", test_mask, seed=4)
    write_sh(tmp_path, "test", "t6", "000", sh_mask(seed=5), seed=5)
    return tmp_path


def every_on_disk_value() -> np.ndarray:
    """A 2x7 annotation holding each of 1..14 once, in a shuffled order."""
    return np.random.default_rng(7).permutation(np.arange(1, 15)).reshape(2, 7)


def test_streethazards_registered_through_hook(sh_root):
    entry = registry_of(streethazards).get("streethazards")
    assert entry.meta["needs_root"] is True
    data = entry.obj(sh_root, "test")
    assert isinstance(data, StreetHazards) and len(data) == 2 and data.split == "test"
    assert data.identity == f"streethazards:{sh_root.resolve()}"
    with pytest.raises(SegcheckError, match="needs --data-root"):
        entry.obj(None, "test")


def test_streethazards_spec_is_the_official_one(sh_root):
    spec = StreetHazards(sh_root, "train").spec
    assert spec.classes == OFFICIAL_CLASSES
    assert spec.ignore_index == 255 and spec.anomaly_index == 13 and spec.inlier_index is None
    assert spec.splits == ("train", "val", "test") and spec.anomaly_splits == ("test",)
    assert spec.mean is None and spec.std is None and spec.class_labels


@pytest.mark.parametrize("unlabeled_as_ignore", [False, True])
def test_streethazards_label_shift_pixel_by_pixel(tmp_path, unlabeled_as_ignore):
    on_disk = every_on_disk_value()
    write_sh(tmp_path, "test", "t5", "000", on_disk)
    if unlabeled_as_ignore:
        (tmp_path / "dataset.yaml").write_text("unlabeled_as_ignore: true\n")
    data = StreetHazards(tmp_path, "test")
    image, mask = data[0]
    assert image.dtype == np.uint8 and image.shape == (2, 7, 3)
    assert mask.dtype == np.int64 and mask.shape == (2, 7)
    if unlabeled_as_ignore:
        expected = {1: 255, **{v: v - 2 for v in range(2, 15)}}
        assert data.spec.classes == OFFICIAL_CLASSES[1:] and data.spec.anomaly_index == 12
        assert data.identity.endswith(":unlabeled_as_ignore")
    else:
        expected = {v: v - 1 for v in range(1, 15)}
        assert data.spec.classes == OFFICIAL_CLASSES and data.spec.anomaly_index == 13
    for (row, col), value in np.ndenumerate(on_disk):
        assert mask[row, col] == expected[value], f"on-disk {value} read as {mask[row, col]}"
        if 2 <= value <= 13 or (value == 1 and not unlabeled_as_ignore):  # a known class keeps its name
            assert data.spec.classes[mask[row, col]] == OFFICIAL_CLASSES[value - 1]
    is_ood, valid = data.spec.ood_pixels(mask)
    assert np.array_equal(is_ood, on_disk == 14)
    assert np.array_equal(valid, on_disk != 1 if unlabeled_as_ignore else np.ones_like(valid))


def test_streethazards_three_splits_paired_by_relative_path(sh_root):
    lengths = {split: len(StreetHazards(sh_root, split)) for split in ("train", "val", "test")}
    assert lengths == {"train": 2, "val": 1, "test": 2}
    train = StreetHazards(sh_root, "train")
    assert [(i.relative_to(sh_root).as_posix(), m.relative_to(sh_root).as_posix()) for i, m in train.pairs] == [
        ("train/images/training/t1-3/100.png", "train/annotations/training/t1-3/100.png"),
        ("train/images/training/t1-3/300.png", "train/annotations/training/t1-3/300.png"),
    ]
    test = StreetHazards(sh_root, "test")
    assert [p[0].parent.name for p in test.pairs] == ["t5", "t6"]  # same stem, two towns: two samples
    image, mask = test[0]
    assert np.array_equal(image, np.asarray(Image.open(test.pairs[0][0])))
    assert (mask == 13).sum() == 3 and test.spec.anomaly_index == 13
    assert np.array_equal(mask, np.asarray(Image.open(test.pairs[0][1])).astype(np.int64) - 1)
    assert test.spec.anomaly_splits == ("test",)
    assert all((StreetHazards(sh_root, s)[i][1] != 13).all() for s in ("train", "val") for i in range(lengths[s]))


def test_streethazards_unpaired_files_are_one_line_errors(sh_root):
    write_sh(sh_root, "train", "t1-3", "lonely")  # an image without its annotation
    with pytest.raises(SegcheckError) as info:
        StreetHazards(sh_root, "train")
    message = one_line(info)
    assert "images without a mask: [t1-3/lonely]" in message and "annotations/training/" in message
    write_png(sh_root / "test/annotations/test/t6/orphan.png", sh_mask().astype(np.uint8))
    with pytest.raises(SegcheckError) as info:
        StreetHazards(sh_root, "test")
    assert "masks without an image: [t6/orphan]" in one_line(info)


@pytest.mark.parametrize("bad", [0, 15])
def test_streethazards_value_outside_1_to_14_is_an_error(tmp_path, bad):
    mask = sh_mask()
    mask[1, 2] = bad
    write_sh(tmp_path, "val", "t4", "007", mask)
    data = StreetHazards(tmp_path, "val")  # values are checked per sample, when it is read
    with pytest.raises(SegcheckError) as info:
        data[0]
    message = one_line(info)
    assert f"t4/007.png has values [{bad}]" in message and "1..14" in message


def test_streethazards_several_bad_values_are_named_together(tmp_path):
    mask = sh_mask()
    mask[0, :3] = [0, 15, 200]
    write_sh(tmp_path, "val", "t4", "007", mask)
    with pytest.raises(SegcheckError, match=r"007\.png has values \[0, 15, 200\], expected StreetHazards"):
        StreetHazards(tmp_path, "val")[0]


def test_streethazards_rgb_annotation_is_an_error(tmp_path):
    write_sh(tmp_path, "val", "t4", "007", np.ones((*SIZE, 3), np.uint8))
    with pytest.raises(SegcheckError, match=r"007\.png has mode RGB, not a single-channel"):
        StreetHazards(tmp_path, "val")[0]


def test_streethazards_missing_folders_and_splits(sh_root, tmp_path):
    with pytest.raises(SegcheckError, match=r"unknown split 'validation' .*train, val, test"):
        StreetHazards(sh_root, "validation")
    with pytest.raises(SegcheckError, match="does not exist"):
        StreetHazards(tmp_path / "nope", "val")
    only_train = tmp_path / "only_train"
    write_sh(only_train, "train", "t1-3", "000", sh_mask())
    with pytest.raises(SegcheckError) as info:
        StreetHazards(only_train, "test")
    assert "test/images/test is missing for split 'test'" in one_line(info)
    assert "streethazards_test.tar" in str(info.value)


@pytest.mark.parametrize(
    "text, match",
    [
        ("unlabeled_as_ignore: true\nclasses: [a, b]\n", r"unknown keys \['classes'\]; allowed keys: unlabeled_as"),
        ("unlabeled_as_ignore: 1\n", "unlabeled_as_ignore must be true or false, got 1"),
        ("unlabeled_as_ignore: [true\n", "not valid YAML"),
        ("- true\n", "must be a mapping"),
    ],
)
def test_streethazards_bad_dataset_yaml(sh_root, text, match):
    (sh_root / "dataset.yaml").write_text(text)
    with pytest.raises(SegcheckError, match=match) as info:
        StreetHazards(sh_root, "val")
    one_line(info)


# --------------------------------------------------------------------------- smiyc


def write_smiyc(root: Path, name: str, mask: np.ndarray | None, suffix: str = ".jpg", seed: int = 0) -> Path:
    """``images/<name><suffix>`` and, when ``mask`` is given, ``labels_masks/<name>_labels_semantic.png``."""
    size = SIZE if mask is None else mask.shape[:2]
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path = root / "images" / f"{name}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **({"lossless": True} if suffix == ".webp" else {}))
    if mask is not None:
        write_png(root / "labels_masks" / f"{name}_labels_semantic.png", mask.astype(np.uint8))
    return path


def smiyc_mask(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice([0, 1, 255], SIZE)


@pytest.fixture
def smiyc_root(tmp_path) -> Path:
    """Two labelled validation frames (.jpg, .webp) and one unlabelled test frame."""
    write_smiyc(tmp_path, "validation0000", smiyc_mask(1), ".jpg", seed=1)
    write_smiyc(tmp_path, "validation0001", smiyc_mask(2), ".webp", seed=2)
    write_smiyc(tmp_path, "zebra0000", None, ".jpg", seed=3)
    return tmp_path


def test_smiyc_registered_through_hook(smiyc_root):
    entry = registry_of(smiyc).get("smiyc")
    assert entry.meta["needs_root"] is True
    data = entry.obj(smiyc_root, "val")
    assert isinstance(data, SMIYC) and len(data) == 2 and data.identity == f"smiyc:{smiyc_root.resolve()}"
    with pytest.raises(SegcheckError, match="needs --data-root"):
        entry.obj(None, "val")
    with pytest.raises(SegcheckError, match=r"unknown split 'test' for smiyc; known splits: val"):
        entry.obj(smiyc_root, "test")


def test_smiyc_default_spec_is_cityscapes_19(smiyc_root):
    spec = SMIYC(smiyc_root).spec
    assert spec.classes == CITYSCAPES_CLASSES and len(spec.classes) == 19
    assert CITYSCAPES_CLASSES[:3] == ("road", "sidewalk", "building") and CITYSCAPES_CLASSES[-1] == "bicycle"
    assert spec.anomaly_index == 19 and spec.inlier_index == 20 and spec.ignore_index == 255
    assert spec.splits == ("val",) and spec.anomaly_splits == ("val",)
    assert spec.mean is None and not spec.class_labels and spec.label_values == {19, 20, 255}


def test_smiyc_mapping_pixel_by_pixel(tmp_path):
    on_disk = np.array([[0, 1, 255], [255, 0, 1]])
    write_smiyc(tmp_path, "validation0000", on_disk, ".png")
    data = SMIYC(tmp_path)
    image, mask = data[0]
    assert image.dtype == np.uint8 and image.shape == (2, 3, 3) and mask.dtype == np.int64
    expected = {0: 20, 1: 19, 255: 255}
    for (row, col), value in np.ndenumerate(on_disk):
        assert mask[row, col] == expected[value]
    is_ood, valid = data.spec.ood_pixels(mask)
    assert np.array_equal(is_ood, on_disk == 1) and np.array_equal(valid, on_disk != 255)
    assert not data.spec.counted(mask).any()  # closed-set metrics count no pixel of it


def test_smiyc_images_of_every_format_and_unlabelled_frames(smiyc_root):
    (smiyc_root / "labels_masks" / "validation0000_labels_semantic_color.png").write_bytes(b"a colour rendering")
    data = SMIYC(smiyc_root)
    assert [(i.name, m.name) for i, m in data.pairs] == [
        ("validation0000.jpg", "validation0000_labels_semantic.png"),
        ("validation0001.webp", "validation0001_labels_semantic.png"),
    ]
    assert [p.name for p in data.unlabelled] == ["zebra0000.jpg"] and "unlabelled=1" in repr(data)
    image, mask = data[1]  # the lossless .webp
    assert np.array_equal(image, np.random.default_rng(2).integers(0, 256, (*SIZE, 3), dtype=np.uint8))
    assert np.array_equal(mask == 19, smiyc_mask(2) == 1)
    assert data[0][0].shape == (*SIZE, 3)  # the .jpg


def test_smiyc_dataset_yaml_classes_and_normalization(smiyc_root):
    (smiyc_root / "dataset.yaml").write_text("classes: [road, car, sky]\nmean: [0.5, 0.5, 0.5]\nstd: [0.2, 0.2, 0.2]\n")
    data = SMIYC(smiyc_root)
    assert data.spec.classes == ("road", "car", "sky") and data.spec.mean == (0.5, 0.5, 0.5)
    assert data.spec.anomaly_index == 3 and data.spec.inlier_index == 4
    _, mask = data[0]
    on_disk = smiyc_mask(1)
    assert np.array_equal(mask, np.select([on_disk == 0, on_disk == 1], [4, 3], 255))


@pytest.mark.parametrize(
    "text, match",
    [
        ("classes: [a, b]\nignore_index: 0\n", r"unknown keys \['ignore_index'\]; allowed keys: classes, mean, std"),
        ("classes: a b\n", "classes must be a list of class names"),
        ("classes: [a]\n", "at least 2 classes"),
        ("mean: [0.5, 0.5, 0.5]\n", "declare both mean and std"),
    ],
)
def test_smiyc_bad_dataset_yaml(smiyc_root, text, match):
    (smiyc_root / "dataset.yaml").write_text(text)
    with pytest.raises(SegcheckError, match=match) as info:
        SMIYC(smiyc_root)
    one_line(info)


def test_smiyc_bad_value_is_an_error(smiyc_root):
    mask = smiyc_mask(1)
    mask[0, :2] = [2, 254]
    write_png(smiyc_root / "labels_masks" / "validation0000_labels_semantic.png", mask.astype(np.uint8))
    data = SMIYC(smiyc_root)
    data[1]
    with pytest.raises(SegcheckError) as info:
        data[0]
    message = one_line(info)
    assert "validation0000_labels_semantic.png has values [2, 254]" in message
    assert "0 (not anomaly), 1 (anomaly) and 255 (void)" in message


def test_smiyc_label_without_image_or_no_labels_are_errors(smiyc_root, tmp_path):
    write_png(smiyc_root / "labels_masks" / "lost_labels_semantic.png", smiyc_mask().astype(np.uint8))
    with pytest.raises(SegcheckError) as info:
        SMIYC(smiyc_root)
    assert "masks without an image: [lost]" in one_line(info)
    unlabelled = tmp_path / "unlabelled"
    write_smiyc(unlabelled, "zebra0000", None)
    (unlabelled / "labels_masks").mkdir()
    with pytest.raises(SegcheckError, match=r"no labels in .*labels_masks \(looked for <name>_labels_semantic\.png\)"):
        SMIYC(unlabelled)
    (unlabelled / "labels_masks").rmdir()
    with pytest.raises(SegcheckError, match=r"labels_masks folder .*labels_masks is missing"):
        SMIYC(unlabelled)


def _gate(*needs) -> Gate:
    return Gate("g", lambda target, cfg: None, needs=needs)


def test_smiyc_closed_set_gates_needing_labels_skip(smiyc_root, sh_root):
    config = segconfig.load()
    model = ModelUnderTest(torch.nn.Conv2d(3, 19, 1))
    data = EvalData.from_dataset(lambda split: SMIYC(smiyc_root, split), "val", size=4, seed=0)
    assert data.masks is not None and data.masks.shape == (2, *SIZE)
    reason = unmet_need(_gate("labels"), Target(model, data), config)
    assert reason is not None and "needs class labels" in reason and "anomaly-only" in reason
    assert unmet_need(_gate(), Target(model, data), config) is None  # the anomaly gates need no labels
    labelled = EvalData.from_dataset(lambda split: StreetHazards(sh_root, split), "test", size=4, seed=0)
    assert unmet_need(_gate("labels"), Target(model, labelled), config) is None


# --------------------------------------------------------------------------- registry


def test_both_are_builtin_plugins():
    loaded = segplugins.load(())
    for name, module in (("streethazards", "segcheck_plugins.streethazards"), ("smiyc", "segcheck_plugins.smiyc")):
        entry = loaded.datasets.get(name)
        assert entry.plugin == module and entry.meta["needs_root"] is True
        assert module in segplugins.BUILTIN_PLUGINS
