"""The real on-disk dataset layouts (Cityscapes, ADE20K, PASCAL VOC 2012), on small files
written in their exact layouts: label mapping pixel by pixel, roots, pairing errors, mixed
sizes under eval.resize, an unlabelled split through the gates, and one suite run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segcheck import SegcheckError
from segcheck import config as segconfig
from segcheck import plugins as segplugins
from segcheck.data import EvalData
from segcheck.gates.labels import label_integrity
from segcheck.gates.registered import Gate, unmet_need
from segcheck.gates.split_gap import generalization
from segcheck.model import ModelUnderTest
from segcheck.target import Target
from segcheck_plugins.ade20k import ADE20K
from segcheck_plugins.cityscapes import Cityscapes
from segcheck_plugins.voc import VOC
from tests.test_datasets import write_png

REPO = Path(__file__).resolve().parents[1]
SIZES = ((20, 24), (17, 23))


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def random_image(size, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def tiled(values, size) -> np.ndarray:
    """``values`` repeated over an array of ``size`` (every value occurs when it has room)."""
    return np.resize(np.asarray(values, dtype=np.uint8), size)


def gate(name: str, *needs, section: str | None = None) -> Gate:
    return Gate(name, lambda target, cfg: None, section=section, needs=needs)


def target_of(data: EvalData, classes: int) -> Target:
    return Target(ModelUnderTest(torch.nn.Conv2d(3, classes, 1)), data)


# --------------------------------------------------------------------------- cityscapes

#: the official labelId -> trainId table (cityscapesScripts helpers/labels.py), written out
#: independently of the plugin: every labelId not listed here is 255
CS_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12}
CS_TRAIN_IDS |= {26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def write_cs(root: Path, split: str, city: str, name: str, mask=None, kind: str = "labelIds", seed: int = 0, size=None):
    """One Cityscapes image of ``split`` in ``city`` and, when ``mask`` is given, its gtFine ``kind`` file."""
    size = size or (SIZES[0] if mask is None else mask.shape)
    write_png(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", random_image(size, seed))
    if mask is not None:
        write_png(root / "gtFine" / split / city / f"{name}_gtFine_{kind}.png", np.asarray(mask, np.uint8))


@pytest.fixture
def cs_root(tmp_path) -> Path:
    """Train: two images in two cities; val: one; test: two images with void placeholder masks."""
    every = tiled(range(34), SIZES[0])
    write_cs(tmp_path, "train", "aachen", "aachen_000000_000019", every, seed=1)
    write_cs(tmp_path, "train", "bochum", "bochum_000000_000313", tiled([7, 26, 0], SIZES[1]), seed=2)
    write_cs(tmp_path, "val", "frankfurt", "frankfurt_000000_000294", tiled(range(34), SIZES[0]), seed=3)
    for i, city in enumerate(("berlin", "bonn")):
        write_cs(tmp_path, "test", city, f"{city}_000000_00001{i}", np.zeros(SIZES[0]), seed=4 + i)
    # files gtFine holds besides the label ids are not read
    write_png(tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_color.png", random_image(SIZES[0], 9))
    (tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_polygons.json").write_text("{}")
    return tmp_path


def test_cityscapes_every_label_id_maps_as_the_official_table_says(cs_root):
    data = Cityscapes(cs_root, "train")
    image, mask = data[0]
    on_disk = tiled(range(34), SIZES[0]).astype(np.int64)
    expected = np.vectorize(lambda v: CS_TRAIN_IDS.get(v, 255))(on_disk)
    assert image.shape == (*SIZES[0], 3) and image.dtype == np.uint8
    assert mask.dtype == np.int64 and np.array_equal(mask, expected)
    assert mask[on_disk == 0].tolist() == [255] * int((on_disk == 0).sum())  # unlabeled
    assert set(mask[on_disk == 1].tolist()) == {255}  # ego vehicle
    assert set(mask[on_disk == 33].tolist()) == {18}  # bicycle
    assert data.spec.num_classes == 19 and data.spec.classes[0] == "road" and data.spec.classes[18] == "bicycle"
    assert data.spec.ignore_index == 255 and data.spec.mean is None
    assert [p[0].parent.name for p in data.pairs] == ["aachen", "bochum"]


@pytest.mark.parametrize("bad", [34, 255])
def test_cityscapes_value_outside_the_label_ids_is_an_error(tmp_path, bad):
    mask = tiled([7, 8, bad], SIZES[0])
    write_cs(tmp_path, "val", "lindau", "lindau_000000_000019", mask)
    with pytest.raises(SegcheckError, match=rf"lindau_000000_000019_gtFine_labelIds.png has values \[{bad}\]") as info:
        Cityscapes(tmp_path, "val")[0]
    assert "labelIds 0..33" in one_line(info)


def test_cityscapes_label_train_ids_pass_through_and_label_ids_win(tmp_path):
    train_ids = tiled([*range(19), 255], SIZES[1])
    write_cs(tmp_path, "val", "munster", "munster_000000_000019", train_ids, kind="labelTrainIds")
    image, mask = Cityscapes(tmp_path, "val")[0]
    assert np.array_equal(mask, train_ids.astype(np.int64))
    # both files for one image: the labelIds one is read, through the official table
    write_png(tmp_path / "gtFine/val/munster/munster_000000_000019_gtFine_labelIds.png", tiled([7], SIZES[1]))
    assert set(np.unique(Cityscapes(tmp_path, "val")[0][1]).tolist()) == {0}
    bad = tiled([0, 19], SIZES[1])
    write_cs(tmp_path, "train", "ulm", "ulm_000000_000019", bad, kind="labelTrainIds")
    with pytest.raises(SegcheckError, match=r"ulm_000000_000019_gtFine_labelTrainIds.png has values \[19\]"):
        Cityscapes(tmp_path, "train")[0]


def test_cityscapes_test_is_unlabelled_end_to_end(cs_root):
    test = Cityscapes(cs_root, "test")
    assert test.spec.unlabelled_splits == ("test",) and not test.spec.labelled("test")
    image, mask = test[1]
    assert mask is None and image.shape == (*SIZES[0], 3)
    data = EvalData.from_dataset(lambda split: Cityscapes(cs_root, split), "test", size=2, seed=0)
    assert data.masks is None and data.images.shape == (2, *SIZES[0], 3)
    reason = unmet_need(gate("noise_input", "labels"), target_of(data, 19), segconfig.load())
    assert reason is not None and "'test' has none" in reason
    # without gtFine/test at all the split still opens: its masks are never read
    for path in sorted((cs_root / "gtFine" / "test").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    assert len(Cityscapes(cs_root, "test")) == 2


def test_cityscapes_unlabelled_test_is_skipped_by_the_gates_that_read_it(cs_root):
    config = segconfig.load()
    data = EvalData.from_dataset(lambda split: Cityscapes(cs_root, split), "val", size=2, seed=0)
    target = target_of(data, 19)
    reason = unmet_need(gate("generalization", "labels", "held_out_split", section="generalization"), target, config)
    assert reason is not None and "'test' split is unlabelled" in reason
    with pytest.raises(SegcheckError, match=r"generalization.split 'test' is unlabelled") as info:
        generalization(target, {**config["generalization"], "split": "test"})
    one_line(info)
    result = label_integrity(target)
    assert "test unlabelled, not read" in result.message
    assert result.details["splits"] == ["train", "val"] and result.details["unlabelled_splits"] == ["test"]
    assert result.details["masks"] == 3


def test_cityscapes_missing_mask_and_wrong_root_are_one_line_errors(cs_root, tmp_path):
    (cs_root / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png").unlink()
    with pytest.raises(SegcheckError, match=r"images without a mask: \[bochum/bochum_000000_000313\]") as info:
        Cityscapes(cs_root, "train")
    assert "gtFine/train/<city>/<name>_gtFine_labelIds.png" in one_line(info)
    with pytest.raises(
        SegcheckError, match=r"no Cityscapes dataset at .*leftImg8bit: it holds no leftImg8bit/"
    ) as info:
        Cityscapes(cs_root / "leftImg8bit", "val")  # the root one level too deep
    assert "leftImg8bit/<split>/<city>/<name>_leftImg8bit.png" in one_line(info)
    for path in sorted((cs_root / "gtFine" / "val").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (cs_root / "gtFine" / "val").rmdir()
    with pytest.raises(
        SegcheckError, match=r"masks folder .*gtFine/val is missing for split 'val'.*gtFine_trainvaltest"
    ):
        Cityscapes(cs_root, "val")
    with pytest.raises(SegcheckError, match=r"does not exist .*leftImg8bit/ and gtFine/") as info:
        Cityscapes(tmp_path / "nowhere", "val")
    one_line(info)
    with pytest.raises(SegcheckError, match=r"unknown split 'trainextra' for cityscapes; known splits: train, val"):
        Cityscapes(cs_root, "trainextra")
    (tmp_path / "empty" / "leftImg8bit" / "val" / "x").mkdir(parents=True)
    (tmp_path / "empty" / "gtFine" / "val").mkdir(parents=True)
    with pytest.raises(SegcheckError, match=r"no images under .*<city>/<name>_leftImg8bit.png"):
        Cityscapes(tmp_path / "empty", "val")


def test_gates_reading_other_splits_skip_unlabelled_ones(loaded_plugins):
    """An unlabelled train or anomaly split (a layout that declares them so) is a SKIP, not a read of None masks."""
    from segcheck.data import DatasetSpec
    from segcheck.gates.registered import NotApplicable

    spec = DatasetSpec(
        classes=("a", "b"), anomaly_index=2, anomaly_splits=("test",), unlabelled_splits=("train", "test")
    )
    images, masks = np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8), np.int64)
    unlabelled = [(images[0], None)]
    data = EvalData(images, masks, spec, "val", splits={"val": [(images[0], masks[0])], "train": unlabelled,
                                                         "test": unlabelled})  # fmt: skip
    target, config = target_of(data, 2), segconfig.load()
    assert "'train' split is unlabelled" in unmet_need(gate("overfit_tiny", "train_split"), target, config)
    for name, reason in (("known_class_miou", "anomaly split 'test' is unlabelled"), ("anomaly_free_training", "")):
        with pytest.raises(NotApplicable, match=reason or "'train' split is unlabelled"):
            loaded_plugins.gates.get(name).obj(target, config["anomaly"])


# --------------------------------------------------------------------------- ade20k


def write_ade(base: Path, folder: str, name: str, mask: np.ndarray, seed: int = 0) -> None:
    """One ADE20K image (JPEG) of ``folder`` (training/validation) and its annotation under ``base``."""
    path = base / "images" / folder / f"{name}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_image(mask.shape, seed)).save(path, quality=90)
    write_png(base / "annotations" / folder / f"{name}.png", mask.astype(np.uint8))


@pytest.fixture
def ade_root(tmp_path) -> Path:
    """ADEChallengeData2016 with two training and three validation images of two sizes."""
    base = tmp_path / "ADEChallengeData2016"
    for i, size in enumerate(SIZES):
        write_ade(base, "training", f"ADE_train_0000000{i + 1}", tiled(range(151), size), seed=i)
    for i, size in enumerate((*SIZES, SIZES[0])):
        write_ade(base, "validation", f"ADE_val_0000000{i + 1}", tiled(range(i, 151), size), seed=10 + i)
    (base / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n")
    return tmp_path


def test_ade20k_labels_are_reduced_by_one_and_other_is_ignored(ade_root):
    data = ADE20K(ade_root, "train")
    _, mask = data[0]
    on_disk = tiled(range(151), SIZES[0]).astype(np.int64)
    assert np.array_equal(mask, np.where(on_disk == 0, 255, on_disk - 1))
    assert set(mask[on_disk == 0].tolist()) == {255}
    assert set(mask[on_disk == 1].tolist()) == {0} and set(mask[on_disk == 150].tolist()) == {149}
    spec = data.spec
    assert spec.num_classes == 150 and len(set(spec.classes)) == 150
    assert (spec.classes[0], spec.classes[12], spec.classes[149]) == ("wall", "person", "flag")
    assert spec.splits == ("train", "val") and spec.ignore_index == 255


def test_ade20k_root_is_the_folder_or_its_parent(ade_root, tmp_path):
    parent, inner = ADE20K(ade_root, "val"), ADE20K(ade_root / "ADEChallengeData2016", "val")
    assert parent.pairs == inner.pairs and len(parent) == 3
    assert parent.identity == inner.identity
    with pytest.raises(SegcheckError, match=r"no ADE20K dataset at .*images/ and annotations/") as info:
        ADE20K(ade_root / "ADEChallengeData2016" / "images", "val")
    assert "ADEChallengeData2016/images/training|validation/<name>.jpg" in one_line(info)


def test_ade20k_value_above_150_missing_annotation_and_test_split(ade_root):
    base = ade_root / "ADEChallengeData2016"
    write_png(base / "annotations/validation/ADE_val_00000001.png", tiled([0, 151, 200], SIZES[0]))
    with pytest.raises(SegcheckError, match=r"ADE_val_00000001.png has values \[151, 200\], expected ADE20K") as info:
        ADE20K(ade_root, "val")[0]
    one_line(info)
    (base / "annotations/validation/ADE_val_00000002.png").unlink()
    with pytest.raises(SegcheckError, match=r"images without a mask: \[ADE_val_00000002\]") as info:
        ADE20K(ade_root, "val")
    one_line(info)
    with pytest.raises(SegcheckError, match=r"unknown split 'test' for ade20k.*no labelled test split"):
        ADE20K(ade_root, "test")


def test_mixed_sizes_need_eval_resize_and_work_with_it(ade_root):
    def splits(split):
        return ADE20K(ade_root, split)

    with pytest.raises(SegcheckError, match=r"3 images read have 2 different sizes \(17x23, 20x24\)") as info:
        EvalData.from_dataset(splits, "val", size=4, seed=0)
    assert "--eval-resize" in one_line(info)
    for policy in ("16x16", "short:16"):
        data = EvalData.from_dataset(splits, "val", size=4, seed=0, resize=policy)
        assert data.images.shape == (3, 16, 16, 3) and data.masks.shape == (3, 16, 16)
        assert set(np.unique(data.masks).tolist()) <= set(range(150)) | {255}  # nearest: no invented label
        train_images, train_masks = data.sample("train", 2, 0)  # other splits go through the same policy
        assert train_images.shape == (2, 16, 16, 3) and train_masks.shape == (2, 16, 16)


def test_unmet_held_out_split_for_a_layout_without_test(ade_root):
    data = EvalData.from_dataset(lambda split: ADE20K(ade_root, split), "val", size=2, seed=0, resize="16x16")
    reason = unmet_need(
        gate("generalization", "labels", "held_out_split", section="generalization"),
        target_of(data, 150),
        segconfig.load(),
    )
    assert reason is not None and "no 'test' split to compare with" in reason


# --------------------------------------------------------------------------- voc

#: the VOC colour map (bitwise, as in VOCdevkit's VOClabelcolormap.m), for palette PNGs like the originals
VOC_PALETTE = [
    sum(((i >> (3 * k + c)) & 1) << (7 - k) for k in range(8)) for i in range(256) for c in range(3)
]  # fmt: skip


def write_palette_png(path: Path, indices: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = indices.shape
    im = Image.frombytes("P", (w, h), np.ascontiguousarray(indices, dtype=np.uint8).tobytes())
    im.putpalette(VOC_PALETTE)
    im.save(path)


@pytest.fixture
def voc_root(tmp_path) -> Path:
    """VOCdevkit/VOC2012 with train (2 ids), val (2 ids), trainval and an unlisted detection-only image."""
    base = tmp_path / "VOCdevkit" / "VOC2012"
    ids = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033", "2011_003256"]}
    for j, (split, names) in enumerate(ids.items()):
        for i, name in enumerate(names):
            size = SIZES[i]
            path = base / "JPEGImages" / f"{name}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(random_image(size, 2 * j + i)).save(path)
            write_palette_png(base / "SegmentationClass" / f"{name}.png", tiled([*range(21), 255], size))
        sets = base / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True, exist_ok=True)
        (sets / f"{split}.txt").write_text("\n".join(names) + "\n")
    (sets / "trainval.txt").write_text("\n".join(ids["train"] + ids["val"]) + "\n")
    Image.fromarray(random_image(SIZES[0], 9)).save(base / "JPEGImages" / "2008_000001.jpg")
    return tmp_path


def test_voc_palette_index_is_the_class_and_255_is_void(voc_root):
    data = VOC(voc_root, "train")
    assert Image.open(data.pairs[0][1]).mode == "P"
    for i, size in enumerate(SIZES):
        image, mask = data[i]
        assert image.shape == (*size, 3)
        assert np.array_equal(mask, tiled([*range(21), 255], size).astype(np.int64))
    spec = data.spec
    assert spec.num_classes == 21 and (spec.classes[0], spec.classes[15], spec.classes[20]) == (
        "background",
        "person",
        "tvmonitor",
    )
    assert spec.splits == ("train", "val") and len(data) == 2  # the unlisted JPEG is not a sample


def test_voc_root_at_parent_devkit_or_voc2012(voc_root):
    roots = (voc_root, voc_root / "VOCdevkit", voc_root / "VOCdevkit" / "VOC2012")
    assert len({VOC(root, "val").pairs for root in roots}) == 1
    with pytest.raises(SegcheckError, match=r"no VOC 2012 dataset at .*ImageSets/Segmentation") as info:
        VOC(voc_root / "VOCdevkit" / "VOC2012" / "JPEGImages", "val")
    assert "SegmentationClass/<id>.png" in one_line(info)
    with pytest.raises(SegcheckError, match=r"unknown split 'test' for voc; known splits: train, val"):
        VOC(voc_root, "test")


def test_voc_rgb_mask_bad_index_and_missing_files_are_one_line_errors(voc_root):
    base = voc_root / "VOCdevkit" / "VOC2012"
    rgb = np.array(VOC_PALETTE, np.uint8).reshape(256, 3)[tiled([0, 15], SIZES[0])]
    write_png(base / "SegmentationClass" / "2007_000033.png", rgb)  # the colour rendering, not indices
    with pytest.raises(SegcheckError, match=r"2007_000033.png has mode RGB.*palette \(mode P\) PNGs") as info:
        VOC(voc_root, "val")[0]
    one_line(info)
    write_palette_png(base / "SegmentationClass" / "2011_003256.png", tiled([0, 21, 254], SIZES[1]))
    with pytest.raises(SegcheckError, match=r"2011_003256.png has values \[21, 254\], expected VOC palette"):
        VOC(voc_root, "val")[1]
    (base / "SegmentationClass" / "2007_000039.png").unlink()
    with pytest.raises(SegcheckError, match=r"1 ids of .*train.txt have no SegmentationClass/<id>.png.*2007_000039"):
        VOC(voc_root, "train")
    (base / "JPEGImages" / "2007_000032.jpg").unlink()
    with pytest.raises(SegcheckError, match=r"have no JPEGImages/<id>.jpg .*\[2007_000032\]"):
        VOC(voc_root, "train")
    (base / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(SegcheckError, match=r"split list .*val.txt is missing"):
        VOC(voc_root, "val")


# --------------------------------------------------------------------------- registry and a suite run


def test_the_three_layouts_are_builtin_plugins(loaded_plugins):
    for name in ("cityscapes", "ade20k", "voc"):
        entry = loaded_plugins.datasets.get(name)
        assert entry.plugin == f"segcheck_plugins.{name}" and entry.plugin in segplugins.BUILTIN_PLUGINS
        assert entry.meta["needs_root"] is True and entry.meta["description"]
        with pytest.raises(SegcheckError, match=rf"dataset '{name}' needs --data-root"):
            entry.obj(None, "val")


def test_gate_suite_on_a_cityscapes_tree_has_no_error_row(pytester, tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for i in range(2):
            mask = None if split == "test" else rng.integers(0, 34, (40, 56))
            write_cs(tmp_path, split, "city", f"city_000000_00000{i}", mask, seed=i, size=(40, 56))
    report = pytester.path / "report.json"
    result = pytester.runpytest(
        str(REPO / "suites" / "gates"),
        "-p",
        "no:cacheprovider",
        "-m",
        "not train",
        "--model",
        "unet",
        "--checkpoint",
        "none",
        "--dataset",
        "cityscapes",
        "--data-root",
        str(tmp_path),
        "--eval-size",
        "2",
        "--segcheck-report",
        str(report),
    )
    gates = {g["gate"]: g for g in json.loads(report.read_text())["gates"]}
    assert gates and all(g["outcome"] != "error" for g in gates.values()), result.stdout.str()
    assert gates["generalization"]["outcome"] == "skipped"
    assert "'test' split is unlabelled" in gates["generalization"]["message"]
    assert "test unlabelled, not read" in gates["label_integrity"]["message"]
