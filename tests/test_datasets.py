"""The bundled dataset plugins: synthetic-streets and folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from segcheck import SegcheckError
from segcheck.data import DatasetSpec
from segcheck.plugins import DATASET_META
from segcheck.registry import Registry
from segcheck_plugins import folder, synthetic_streets
from segcheck_plugins.folder import FolderDataset
from segcheck_plugins.synthetic_streets import CLASSES, SHORTCUT_MEAN, SyntheticStreets


def registry_of(module) -> Registry:
    reg = Registry("dataset", DATASET_META)
    with reg.provided_by(module.__name__):
        module.segcheck_register_datasets(registry=reg)
    return reg


# --------------------------------------------------------------------------- synthetic-streets


@pytest.fixture(scope="module")
def val32():
    data = SyntheticStreets("val", length=32)
    return [data[i] for i in range(len(data))]


def test_synthetic_registered_through_hook():
    entry = registry_of(synthetic_streets).get("synthetic-streets")
    assert entry.meta["needs_root"] is False
    data = entry.obj(None, "val")
    assert len(data) == 128 and data.split == "val"
    assert data.identity == "synthetic-streets:seed=0:size=64x128"
    assert (
        data.spec.classes
        == CLASSES
        == (
            "road",
            "sidewalk",
            "building",
            "vegetation",
            "sky",
            "car",
            "person",
            "pole",
        )
    )
    assert data.spec.ignore_index == 255 and data.spec.anomaly_index == 8 and data.spec.anomaly_splits == ("anomaly",)
    assert data.spec.splits == ("train", "val", "test", "anomaly")
    assert [len(SyntheticStreets(s)) for s in data.spec.splits] == [1024, 128, 128, 128]


def test_synthetic_unknown_split_lists_known():
    with pytest.raises(SegcheckError, match=r"unknown split 'validation'.*train, val, test"):
        SyntheticStreets("validation")


def test_synthetic_shapes_dtypes_and_label_range(val32):
    for image, mask in val32:
        assert image.shape == (64, 128, 3) and image.dtype == np.uint8
        assert mask.shape == (64, 128) and mask.dtype == np.int64
        assert mask.min() >= 0 and mask.max() < len(CLASSES)


def test_synthetic_custom_size_and_length():
    data = SyntheticStreets("test", size=(32, 48), length=3, seed=5)
    assert len(data) == 3 and data.identity == "synthetic-streets:seed=5:size=32x48"
    image, mask = data[-1]
    assert image.shape == (32, 48, 3) and mask.shape == (32, 48)
    with pytest.raises(IndexError):
        data[3]


def test_synthetic_deterministic_by_seed_split_index(val32):
    data = SyntheticStreets("val")
    for i in (0, 7):
        again = SyntheticStreets("val", length=10)[i]
        assert np.array_equal(data[i][0], again[0]) and np.array_equal(data[i][1], again[1])
        assert np.array_equal(val32[i][0], again[0])
    assert not np.array_equal(data[0][0], data[1][0])
    assert not np.array_equal(data[0][0], SyntheticStreets("train")[0][0])
    assert not np.array_equal(data[0][0], SyntheticStreets("test")[0][0])
    assert not np.array_equal(data[0][0], SyntheticStreets("val", seed=1)[0][0])


def test_synthetic_every_class_appears(val32):
    counts = np.bincount(np.concatenate([m.ravel() for _, m in val32]), minlength=len(CLASSES))
    missing = [name for name, n in zip(CLASSES, counts) if n == 0]
    assert not missing, f"classes never generated in 32 val images: {missing}"


def test_synthetic_has_strong_positional_prior(val32):
    masks = np.stack([m for _, m in val32])
    sky = CLASSES.index("sky")
    road = CLASSES.index("road")
    assert (masks[:, :8] == sky).mean() > 0.5
    assert (masks[:, -8:] == sky).mean() == 0.0
    assert (masks[:, -8:] == road).mean() > 5 * (masks[:, :16] == road).mean() + 0.2


def test_synthetic_classes_have_distinct_colours(val32):
    """A model reading the image can separate the big classes by colour alone."""
    images = np.stack([im for im, _ in val32]).reshape(-1, 3).astype(float)
    masks = np.stack([m for _, m in val32]).ravel()
    means = {name: images[masks == c].mean(0) for c, name in enumerate(CLASSES[:5])}
    for a in means:
        for b in means:
            if a < b:
                assert np.abs(means[a] - means[b]).max() > 20, (a, b, means[a], means[b])


def test_shortcut_look_keeps_every_layout_and_takes_the_colours_away(val32):
    """synthetic-streets-shortcut: the same label maps, its own identity and statistics, and
    class colours that no longer tell the big classes apart."""
    from segcheck_plugins.synthetic_streets import SHORTCUT

    entry = registry_of(synthetic_streets).get("synthetic-streets-shortcut")
    shortcut = entry.obj(None, "val", length=32)
    assert shortcut.look == SHORTCUT and not entry.meta["needs_root"]
    assert (
        shortcut.identity == "synthetic-streets:seed=0:size=64x128:look=cue=0,clutter=12,lighting=1,palette=5,noise=30"
    )
    pairs = [shortcut[i] for i in range(32)]
    assert all(np.array_equal(m, m0) for (_, m), (_, m0) in zip(pairs, val32))
    assert not any(np.array_equal(im, im0) for (im, _), (im0, _) in zip(pairs, val32))

    def colour_gaps(pairs):  # largest channel gap between the mean colours of road, sidewalk, building, vegetation
        images = np.stack([im for im, _ in pairs]).reshape(-1, 3).astype(float)
        masks = np.stack([m for _, m in pairs]).ravel()
        means = [images[masks == c].mean(0) for c in range(4)]
        return [np.abs(a - b).max() for i, a in enumerate(means) for b in means[i + 1 :]]

    assert np.mean(colour_gaps(pairs)) < 0.5 * np.mean(colour_gaps(val32))
    mean, std = SyntheticStreets.measure_mean_std(count=64, look=SHORTCUT)
    assert np.allclose(mean, shortcut.spec.mean, atol=0.02) and np.allclose(std, shortcut.spec.std, atol=0.02)
    again = entry.obj(None, "val", length=2, look=synthetic_streets.Look(cue=1.0, clutter=0, lighting=0, noise=0))
    assert (
        again.identity.endswith("look=cue=1,clutter=0,lighting=0,palette=5,noise=0")
        and again.spec.mean != SHORTCUT_MEAN
    )


def test_shortcut_knobs_are_checked():
    with pytest.raises(ValueError, match="cue must be in 0..1"):
        synthetic_streets.Look(cue=1.5)
    with pytest.raises(ValueError, match="clutter and noise must be >= 0"):
        synthetic_streets.Look(clutter=-1)
    with pytest.raises(SegcheckError, match="look must be a synthetic_scene.Look"):
        SyntheticStreets("val", look={"cue": 0.5})


def test_synthetic_mean_std_match_generated_images():
    mean, std = SyntheticStreets.measure_mean_std(count=64)
    spec = SyntheticStreets("train").spec
    assert np.allclose(mean, spec.mean, atol=0.02) and np.allclose(std, spec.std, atol=0.02)


def test_synthetic_anomalies_are_pasted_on_top():
    plain, odd = SyntheticStreets("val", length=8), SyntheticStreets("val", length=8, anomalies=True)
    assert odd.spec.anomaly_index == 8 and odd.identity.endswith(":anomalies")
    assert odd.identity != plain.identity
    for i in range(8):
        (_image, mask), (_image_a, mask_a) = plain[i], odd[i]
        ood = mask_a == 8
        assert ood.any()
        assert set(np.unique(mask_a)) <= set(range(9))
        assert np.array_equal(mask[~ood], mask_a[~ood])
    factory = registry_of(synthetic_streets).get("synthetic-streets").obj
    assert factory(None, "test", anomalies=True).spec.anomaly_index == 8


def test_synthetic_anomaly_split_is_the_only_one_with_anomalies():
    anomaly = SyntheticStreets("anomaly", length=16)
    assert anomaly.spec.anomaly_splits == ("anomaly",) and anomaly.spec.anomaly_index == 8
    assert all((anomaly[i][1] == 8).any() for i in range(16))
    for split in ("train", "val", "test"):
        data = SyntheticStreets(split, length=16)
        assert data.spec == anomaly.spec  # one description for every split
        assert not any((data[i][1] == 8).any() for i in range(16))


# --------------------------------------------------------------------------- folder


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_folder(base: Path, stems=("a", "b", "c"), size=(8, 12), labels=3, seed=0) -> None:
    """images/<stem>.png (RGB) and masks/<stem>.png (L, values < labels) under ``base``."""
    rng = np.random.default_rng(seed)
    for stem in stems:
        write_png(base / "images" / f"{stem}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        write_png(base / "masks" / f"{stem}.png", rng.integers(0, labels, size, dtype=np.uint8))


def write_config(root: Path, **config) -> None:
    root.mkdir(parents=True, exist_ok=True)
    config.setdefault("classes", ["background", "road", "car"])
    (root / "dataset.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def flat(tmp_path) -> Path:
    make_folder(tmp_path)
    write_config(tmp_path)
    return tmp_path


def test_folder_registered_through_hook(flat):
    entry = registry_of(folder).get("folder")
    assert entry.meta["needs_root"] is True
    data = entry.obj(flat, "val")
    assert isinstance(data.spec, DatasetSpec) and len(data) == 3
    with pytest.raises(SegcheckError, match="needs --data-root"):
        entry.obj(None, "val")


def test_folder_flat_layout_serves_every_split(flat):
    data = FolderDataset(flat, "train")
    assert data.identity == f"folder:{flat.resolve()}"
    assert data.spec.classes == ("background", "road", "car")
    assert data.spec.ignore_index == 255 and data.spec.mean is None and data.spec.anomaly_index is None
    assert data.spec.splits == ("train", "val", "test")
    image, mask = data[1]
    assert image.dtype == np.uint8 and image.shape == (8, 12, 3)
    assert mask.dtype == np.int64 and mask.shape == (8, 12)
    expected = np.asarray(Image.open(flat / "masks" / "b.png"))
    assert np.array_equal(mask, expected)
    assert np.array_equal(image, np.asarray(Image.open(flat / "images" / "b.png")))
    assert np.array_equal(FolderDataset(flat, "test")[1][1], mask)
    with pytest.raises(SegcheckError, match=r"unknown split 'dev'.*train, val, test"):
        FolderDataset(flat, "dev")


def test_folder_split_subfolders(tmp_path):
    make_folder(tmp_path / "train", stems=("t1", "t2", "t3", "t4"))
    make_folder(tmp_path / "val", stems=("v1", "v2"), seed=1)
    write_config(tmp_path, ignore_index=9, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], anomaly_index=7)
    train, val = FolderDataset(tmp_path, "train"), FolderDataset(tmp_path, "val")
    assert (len(train), len(val)) == (4, 2)
    assert train.spec.splits == ("train", "val")
    assert (train.spec.ignore_index, train.spec.anomaly_index, train.spec.mean) == (9, 7, (0.5, 0.5, 0.5))
    assert [p[0].stem for p in val.pairs] == ["v1", "v2"]
    with pytest.raises(SegcheckError, match=r"unknown split 'test'.*known splits: train, val"):
        FolderDataset(tmp_path, "test")


def test_folder_grayscale_jpeg_and_palette_masks(tmp_path):
    write_config(tmp_path)
    rng = np.random.default_rng(0)
    write_png(tmp_path / "images" / "g.jpg", rng.integers(0, 256, (8, 12), dtype=np.uint8))
    labels = rng.integers(0, 3, (8, 12), dtype=np.uint8)
    palette_mask = Image.new("P", (12, 8))
    palette_mask.putpalette([0, 0, 0, 128, 64, 128, 0, 0, 142])
    palette_mask.putdata(labels.ravel().tolist())
    (tmp_path / "masks").mkdir()
    palette_mask.save(tmp_path / "masks" / "g.png")
    image, mask = FolderDataset(tmp_path, "val")[0]
    assert image.shape == (8, 12, 3) and image.dtype == np.uint8
    assert Image.open(tmp_path / "masks" / "g.png").mode == "P"
    assert np.array_equal(mask, labels)


def test_folder_binary_255_masks(tmp_path):
    make_folder(tmp_path, stems=("x",), labels=2)
    mask = np.zeros((8, 12), np.uint8)
    mask[2:5, 3:9] = 255
    write_png(tmp_path / "masks" / "x.png", mask)
    write_config(tmp_path, classes=["background", "lesion"], binary_255=True)
    _, loaded = FolderDataset(tmp_path, "val")[0]
    assert set(np.unique(loaded)) == {0, 1} and (loaded == 1).sum() == 18
    write_config(tmp_path, classes=["background", "lesion"])  # without the flag, 255 is ignore_index
    assert set(np.unique(FolderDataset(tmp_path, "val")[0][1])) == {0, 255}
    write_config(tmp_path, classes=["background", "lesion"], ignore_index=9)
    with pytest.raises(SegcheckError, match=r"label values \[255\] outside 0\.\.1 \(ignore_index 9\)"):
        FolderDataset(tmp_path, "val")[0]
    mask[0, 0] = 128
    write_png(tmp_path / "masks" / "x.png", mask)
    write_config(tmp_path, classes=["background", "lesion"], binary_255=True)
    with pytest.raises(SegcheckError, match=r"x\.png has label values \[128\].*binary_255"):
        FolderDataset(tmp_path, "val")[0]


# errors: each names the problem


def test_folder_error_root_missing(tmp_path):
    with pytest.raises(SegcheckError, match="does not exist.*--data-root"):
        FolderDataset(tmp_path / "nope", "val")


def test_folder_error_no_dataset_yaml(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(SegcheckError, match=r"dataset\.yaml is missing.*classes: \[background, road, car\]"):
        FolderDataset(tmp_path, "val")


@pytest.mark.parametrize(
    "text, match",
    [
        ("classes: [a, b]\ncolours: [1]\nsplits: x\n", r"unknown keys \['colours', 'splits'\]"),
        ("ignore_index: 255\n", "no 'classes' list"),
        ("classes: a b c\n", "classes must be a list"),
        ("classes: [a, a]\n", "distinct"),
        ("classes: [a, b]\nignore_index: 1\n", "ignore_index 1 collides with class 'b'"),
        ("classes: [a, b]\nmean: [0.5, 0.5]\n", "mean must be a list of 3 numbers"),
        ("classes: [a, b]\nanomaly_index: 1\n", "anomaly_index 1 collides"),
        ("classes: [a, b, c]\nbinary_255: true\n", "exactly 2 names"),
        ("classes: [a, b\n", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
    ],
)
def test_folder_error_bad_dataset_yaml(tmp_path, text, match):
    make_folder(tmp_path)
    (tmp_path / "dataset.yaml").write_text(text)
    with pytest.raises(SegcheckError, match=match):
        FolderDataset(tmp_path, "val")


def test_folder_error_images_or_masks_folder_missing(tmp_path):
    write_config(tmp_path)
    with pytest.raises(SegcheckError, match=r"images folder .*images is missing"):
        FolderDataset(tmp_path, "val")
    make_folder(tmp_path)
    for path in (tmp_path / "masks").iterdir():
        path.unlink()
    (tmp_path / "masks").rmdir()
    with pytest.raises(SegcheckError, match=r"masks folder .*masks is missing"):
        FolderDataset(tmp_path, "val")


def test_folder_error_no_images(tmp_path):
    write_config(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    with pytest.raises(SegcheckError, match=r"no images in .*images"):
        FolderDataset(tmp_path, "val")


def test_folder_error_unpaired_files_names_up_to_five_stems(tmp_path):
    root = tmp_path / "root"
    write_config(root)
    make_folder(root, stems=("a", "b"))
    make_folder(tmp_path / "extra", stems=[f"img{i}" for i in range(7)])
    for path in (tmp_path / "extra" / "images").iterdir():
        path.rename(root / "images" / path.name)
    write_png(root / "masks" / "orphan.png", np.zeros((8, 12), np.uint8))
    with pytest.raises(SegcheckError) as info:
        FolderDataset(root, "val")
    message = str(info.value)
    assert "unpaired" in message and "\n" not in message
    assert "img0, img1, img2, img3, img4 (+2 more)" in message and "img5" not in message
    assert "masks without an image: [orphan]" in message


def test_folder_error_size_mismatch(flat):
    write_png(flat / "masks" / "b.png", np.zeros((6, 12), np.uint8))
    data = FolderDataset(flat, "val")
    assert data[0][0].shape == (8, 12, 3)
    with pytest.raises(SegcheckError, match=r"b\.png is 8x12 but its mask .*b\.png is 6x12"):
        data[1]


def test_folder_error_labels_out_of_range(tmp_path):
    make_folder(tmp_path)
    write_config(tmp_path, anomaly_index=200)
    mask = np.zeros((8, 12), np.uint8)
    mask[0, :4] = [3, 7, 200, 255]
    write_png(tmp_path / "masks" / "c.png", mask)
    data = FolderDataset(tmp_path, "val")
    data[0]  # labels are validated lazily, per sample
    with pytest.raises(SegcheckError, match=r"c\.png has label values \[3, 7\] outside 0\.\.2"):
        data[2]


def test_folder_error_rgb_mask(flat):
    write_png(flat / "masks" / "a.png", np.zeros((8, 12, 3), np.uint8))
    with pytest.raises(SegcheckError, match=r"a\.png has mode RGB"):
        FolderDataset(flat, "val")[0]


@pytest.mark.parametrize("which", ["images", "masks"])
def test_folder_error_corrupt_file(flat, which):
    (flat / which / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(SegcheckError, match=rf"cannot read {which[:-1]} .*a\.png"):
        FolderDataset(flat, "val")[0]


def test_folder_error_duplicate_stems(flat):
    write_png(flat / "images" / "a.jpg", np.zeros((8, 12, 3), np.uint8))
    with pytest.raises(SegcheckError, match=r"share the stem 'a'.*a\.jpg, a\.png"):
        FolderDataset(flat, "val")


@pytest.mark.parametrize("anomaly, ignore", [(1, 255), (-1, 255), (9, 9)])
def test_any_dataset_spec_rejects_an_anomaly_label_that_collides(anomaly, ignore):
    with pytest.raises(SegcheckError, match=f"anomaly_index {anomaly} collides"):
        DatasetSpec(classes=("a", "b"), ignore_index=ignore, anomaly_index=anomaly)
    assert DatasetSpec(classes=("a", "b"), ignore_index=ignore, anomaly_index=7).anomaly_index == 7


def test_anomaly_splits_and_inlier_index_are_checked():
    with pytest.raises(SegcheckError, match="anomaly_splits.*need an anomaly_index"):
        DatasetSpec(("a", "b"), anomaly_splits=("test",))
    with pytest.raises(SegcheckError, match="must be among the splits"):
        DatasetSpec(("a", "b"), anomaly_index=2, anomaly_splits=("weird",))
    with pytest.raises(SegcheckError, match="inlier_index 1 collides"):
        DatasetSpec(("a", "b"), inlier_index=1)
    spec = DatasetSpec(("a", "b"), anomaly_index=2, inlier_index=3)
    masks = np.array([0, 1, 2, 3, 255])
    assert not spec.class_labels and spec.label_values == {2, 3, 255}
    assert spec.counted(masks).tolist() == [True, True, False, False, False]
    assert spec.closed_set(masks).tolist() == [0, 1, 255, 255, 255]
    ood, valid = spec.ood_pixels(masks)
    assert ood.tolist() == [False, False, True, False, False] and valid.tolist() == [True] * 4 + [False]
    with pytest.raises(SegcheckError, match="declares no anomaly_index"):
        DatasetSpec(("a", "b")).ood_pixels(masks)
