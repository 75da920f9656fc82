"""split_leakage, split_shift and the fleet's cross_dataset_leakage, on seeded defects the tests write:
train images copied into val after JPEG recompression and a 2-pixel crop, and a val split drawn from
another class balance; clean splits of one distribution pass."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from segcheck import config as segconfig
from segcheck.figures import drawn
from segcheck.fleet import fleet_view
from segcheck.gates.registered import NotApplicable, run, unmet_need
from segcheck.gates.splits import cross_dataset_leakage, split_leakage, split_shift
from segcheck.report import GateRecord
from segcheck.splits import HASH_BITS, distances, image_hash, jensen_shannon
from segcheck_plugins.synthetic_streets import CLASSES, SyntheticStreets
from tests.conftest import REPO, build_target
from tests.test_html_report import page_images

CFG = segconfig.DEFAULTS


def jpeg_cropped(image: np.ndarray, quality: int = 75, crop: int = 2) -> np.ndarray:
    """``image`` recompressed as JPEG and cropped by ``crop`` pixels at the top and the left."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))[crop:, crop:]


def write_split(root: Path, split: str, samples: dict[str, tuple[np.ndarray, np.ndarray]], jpeg=()) -> None:
    """``root/split/{images,masks}/<stem>`` of ``samples`` (stem -> (image, mask)); stems in ``jpeg``
    are saved as recompressed JPEG images (cropped 2 px), the others as PNG."""
    for kind in ("images", "masks"):
        (root / split / kind).mkdir(parents=True, exist_ok=True)
    for stem, (image, mask) in samples.items():
        if stem in jpeg:
            image, mask = jpeg_cropped(image), mask[2:, 2:]
        Image.fromarray(image).save(root / split / "images" / f"{stem}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / split / "masks" / f"{stem}.png")
    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": list(CLASSES)}))


def scenes(split: str, indices) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data = SyntheticStreets(split=split)
    return {f"{split}{i:04d}": data[i] for i in indices}


def target_on(root: Path, **eval_cfg):
    """A random-init unet on the folder dataset at ``root`` (the split gates read no prediction)."""
    from segcheck import plugins as segplugins

    config = segconfig.load(overrides={"eval": {"size": 8, **eval_cfg}})
    return build_target(segplugins.load(), config, "unet", "folder", checkpoint="none", data_root=root), config


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """train 40 synthetic train scenes; val 20 val scenes and 5 train scenes recompressed and cropped;
    test 20 test scenes."""
    root = tmp_path_factory.mktemp("leaky")
    train = scenes("train", range(40))
    copies = {f"copy{k}": train[f"train{i:04d}"] for k, i in enumerate((3, 11, 17, 28, 36))}
    write_split(root, "train", train)
    write_split(root, "val", {**scenes("val", range(20)), **copies}, jpeg=set(copies))
    write_split(root, "test", scenes("test", range(20)))
    return root


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    write_split(root, "train", scenes("train", range(60)))
    write_split(root, "val", scenes("val", range(20)))
    write_split(root, "test", scenes("test", range(20)))
    return root


# --- the hash -------------------------------------------------------------------------------------------


def test_hash_distance_is_small_for_a_copy_or_a_resized_copy_and_large_for_another_scene():
    train = SyntheticStreets(split="train")
    a, other = train[0][0], train[1][0]
    copy, resized = jpeg_cropped(a), np.asarray(Image.fromarray(a).resize((141, 70), Image.BILINEAR))  # 10% larger
    hashes = np.stack([image_hash(copy), image_hash(other), image_hash(a), image_hash(resized)])
    d = distances(np.stack([image_hash(a)]), hashes)[0]
    assert d[2] == 0 and max(d[0], d[3]) <= 0.2 * HASH_BITS < 0.25 * HASH_BITS < d[1]


def test_distances_match_a_bit_by_bit_count():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (5, 64), np.uint8), rng.integers(0, 256, (7, 64), np.uint8)
    expected = np.unpackbits(a[:, None] ^ b[None], axis=-1).sum(-1)
    assert np.array_equal(distances(a, b), expected)


def test_jensen_shannon_bounds():
    assert jensen_shannon([1, 2, 3], [2, 4, 6]) == pytest.approx(0)
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1)
    assert np.isnan(jensen_shannon([0, 0], [1, 1]))


# --- split_leakage ----------------------------------------------------------------------------------------


def test_split_leakage_names_all_five_copies_with_both_file_names(leaky):
    target, config = target_on(leaky, resize="64x128")  # the cropped copies are 62x126
    result = split_leakage(target, config["split_leakage"])
    assert not result.passed
    d = result.details
    assert sorted(d["leaked_images"]) == [f"val/copy{k}" for k in range(5)]
    assert result.value == pytest.approx(5 / 25)
    named = {(p["a"], p["b"]) for p in d["pairs"]}
    for k, i in enumerate((3, 11, 17, 28, 36)):
        assert (f"val/copy{k}", f"train/train{i:04d}") in named
        assert f"val/copy{k} ~ train/train{i:04d}" in result.message
    assert d["pairs_total"] == 5 and d["near_pairs"] == {"val-train": 5, "val-test": 0, "train-test": 0}
    assert "5 of 25 'val' images (20.0%) have a near-duplicate" in result.message
    assert "the model is scored on images it was trained on" in result.message
    assert max(p["distance"] for p in d["pairs"]) <= 0.25
    assert set(d["hashes"]) == {"val", "train", "test"}  # 85 images: kept for the fleet comparison


def test_split_leakage_finds_nothing_on_clean_splits(clean):
    target, config = target_on(clean)
    result = split_leakage(target, config["split_leakage"])
    assert result.passed and result.value == 0
    assert result.details["pairs"] == [] and result.details["leaked_images"] == []
    assert min(result.details["closest"].values()) > 0.25  # the margin on these scenes
    assert "no image of 'val' has a near-duplicate in 'train' or 'test'" in result.message


def test_split_leakage_figure_puts_the_pairs_side_by_side(leaky):
    target, config = target_on(leaky, resize="64x128")
    gate = next(g for g in target_plugins().gates.gates() if g.name == "split_leakage")
    result = run(gate, target, config)  # the registered gate fails with its record, it does not raise
    (figure,) = drawn("split_leakage", gate.figures, target, result, config["split_leakage"])
    assert figure.png is not None and figure.name == "pairs" and "near-duplicates" in figure.title


def target_plugins():
    from segcheck import plugins as segplugins

    return segplugins.load()


def test_split_leakage_skips_a_flat_layout_and_a_lone_eval_sample(tmp_path, make_target):
    from tests.test_datasets import make_folder, write_config

    make_folder(tmp_path)
    write_config(tmp_path, classes=["a", "b", "c"])
    target, config = target_on(tmp_path, size=3)
    with pytest.raises(NotApplicable, match="serves the same files as 'train'"):
        split_leakage(target, config["split_leakage"])
    with pytest.raises(NotApplicable, match="same files"):
        split_shift(target, config["split_shift"])
    from segcheck.data import EvalData
    from segcheck.target import Target

    honest = make_target(eval_size=4)
    alone = Target(honest.model, EvalData(honest.data.images, honest.data.masks, honest.data.spec))
    with pytest.raises(NotApplicable, match="no other split with images than 'val'"):
        split_leakage(alone, CFG["split_leakage"])
    gate = next(g for g in target_plugins().gates.gates() if g.name == "split_shift")
    assert "needs a 'train' split" in unmet_need(gate, alone, segconfig.load())


def test_report_lists_the_pairs_closest_first_and_the_html_page_draws_both_gates(pytester, leaky):
    report = pytester.path / "report.json"
    checkpoint = REPO / "plugins" / "checkpoints" / "unet_synthetic-streets_robust.safetensors"
    result = pytester.runpytest(
        str(REPO / "suites" / "gates"), "-p", "no:cacheprovider", "-k", "split_leakage or split_shift",
        "--dataset", "folder", "--data-root", str(leaky), "--model", "unet", "--checkpoint", str(checkpoint),
        "--eval-size", "8", "--eval-resize", "64x128", "--segcheck-report", str(report),
        "--segcheck-html", str(pytester.path / "report.html"),
    )  # fmt: skip
    assert result.ret == 1, result.stdout.str()
    records = {g["gate"]: g for g in json.loads(report.read_text())["gates"]}
    leakage, shift = records["split_leakage"], records["split_shift"]
    assert (leakage["outcome"], shift["outcome"]) == ("failed", "passed"), (leakage["message"], shift["message"])
    pairs = leakage["details"]["pairs"]
    assert [p["distance"] for p in pairs] == sorted(p["distance"] for p in pairs) and len(pairs) == 5
    assert all(p["a"].startswith("val/copy") and p["b"].startswith("train/train") for p in pairs)
    page = (pytester.path / "report.html").read_text()
    page_images(page, folder=pytester.path)  # every image of the page opens
    for record in (leakage, shift):
        assert record["figures"], record["figure_notes"]
        for path in record["figures"]:  # shown (a thumbnail of a failure), linking to the full PNG
            assert f'<a href="{path}"><img ' in page


def test_an_empty_train_split_is_a_skip_of_both_gates_not_an_error():
    import segcheck
    from tests.models import ConstantModel

    val = SyntheticStreets(split="val")
    images, masks = (np.stack(a) for a in zip(*(val[i] for i in range(4))))
    result = segcheck.check(ConstantModel(), images, masks, classes=CLASSES, gates=["split_leakage", "split_shift"],
                            splits={"train": []}, device="cpu")  # fmt: skip
    assert [r.outcome for r in result] == ["skipped", "skipped"], str(result)
    assert "no other split with images than 'val'" in result.get("split_leakage").message
    assert "split 'train' (0 images) has no labelled pixel" in result.get("split_shift").message


# --- split_shift -----------------------------------------------------------------------------------------


def _shifted_val(count: int = 20) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``count`` val scenes drawn from another class balance: of 300, those with the most building."""
    val = SyntheticStreets(split="val", length=300)
    building = [float(np.mean(val[i][1] == CLASSES.index("building"))) for i in range(300)]
    chosen = np.argsort(building)[::-1][:count]
    return {f"val{i:04d}": val[int(i)] for i in chosen}


def test_split_shift_fails_a_val_split_of_another_class_balance(tmp_path):
    write_split(tmp_path, "train", scenes("train", range(60)))
    write_split(tmp_path, "val", _shifted_val())
    target, config = target_on(tmp_path)
    result = split_shift(target, config["split_shift"])
    assert not result.passed, result.message
    d = result.details
    assert result.value > max(0.01, d["chance_divergence"]) and result.threshold == max(0.01, d["chance_divergence"])
    assert d["class_shares"]["val"]["building"] > d["class_shares"]["train"]["building"] + 0.1
    assert "building" in result.message.split("largest differences:")[1][:40]
    assert "'val' holds another class balance than train" in result.message


def test_split_shift_passes_splits_of_one_distribution(clean):
    target, config = target_on(clean)
    result = split_shift(target, config["split_shift"])
    assert result.passed, result.message
    assert result.value < 0.005 and set(result.details["class_shares"]) == {"train", "val", "test"}
    stats = result.details["image_statistics"]
    assert stats["val"]["sizes"] == {"64x128": 20} and 60 < stats["train"]["brightness"]["mean"] < 200


def test_split_shift_names_a_class_absent_from_a_split(tmp_path):
    train = scenes("train", range(30))
    val = {stem: (image, np.where(mask == CLASSES.index("pole"), 255, mask)) for stem, (image, mask) in
           scenes("val", range(12)).items()}  # fmt: skip
    write_split(tmp_path, "train", train)
    write_split(tmp_path, "val", val)
    target, config = target_on(tmp_path)
    result = split_shift(target, config["split_shift"])
    assert result.details["absent_classes"] == {"pole": {"present": ["train"], "absent": ["val"]}}
    assert "pole absent from val (present in train)" in result.message


def test_split_shift_figure_draws_the_class_shares(clean):
    target, config = target_on(clean)
    gate = next(g for g in target_plugins().gates.gates() if g.name == "split_shift")
    result = run(gate, target, config)
    (figure,) = drawn("split_shift", gate.figures, target, result, config["split_shift"])
    assert figure.name == "class_shares" and (figure.png is not None or "segcheck[report]" in figure.note)


# --- the fleet ------------------------------------------------------------------------------------------


def _record(target_id: str, root: Path, **eval_cfg) -> tuple[dict, GateRecord]:
    target, config = target_on(root, **eval_cfg)
    result = split_leakage(target, config["split_leakage"])
    spec = {"model": "unet", "dataset": "folder", "data_root": str(root), "checkpoint": None, "init_seed": 0,
            "model_args": {}}  # fmt: skip
    return {"spec": spec}, GateRecord.from_result(result, target_id, f"t::{target_id}", "split_leakage")


def test_cross_dataset_leakage_names_images_two_datasets_share(tmp_path, clean):
    other = tmp_path / "other"
    shared = scenes("val", range(3))  # the clean dataset's first val images, re-encoded into other's train
    write_split(other, "train", {**scenes("train", range(100, 130)), **shared}, jpeg=set(shared))
    write_split(other, "val", scenes("val", range(50, 60)))
    described_a, a = _record("a", clean)
    described_b, b = _record("b", other)
    view = fleet_view(
        {"a": described_a, "b": described_b}, [a, b], segconfig.load(), target_plugins().gates.gates("fleet")
    )
    (record,) = [g for g in view["gates"] if g["gate"] == "cross_dataset_leakage"]
    assert record["outcome"] == "failed" and record["target"] == f"folder ({clean}) ~ folder ({other})"
    assert record["value"] == pytest.approx(3 / 30)  # 3 of the 20 + 10 images of the two val splits
    assert record["details"]["pairs_total"] == 3
    assert f"folder ({clean}):val/val0000 ~ folder ({other}):train/val0000" in record["message"]
    assert "hashes" not in str(view["targets"])  # the view's rows stay small: the hashes reach the gates only


def test_cross_dataset_leakage_passes_distinct_datasets_and_names_uncompared_ones(tmp_path, clean):
    write_split(tmp_path, "train", scenes("train", range(100, 130)))
    write_split(tmp_path, "val", scenes("val", range(50, 60)))
    rows = []
    for name, root in (("a", clean), ("b", tmp_path)):
        _, record = _record(name, root)
        rows.append(
            {"target": name, "dataset": "folder", "data_root": str(root), "details": {"split_leakage": record.details}}
        )
    results = cross_dataset_leakage(rows, CFG["split_leakage"])
    (result,) = results.values()
    assert result.passed and result.value == 0
    rows[1]["details"]["split_leakage"] = {
        k: v for k, v in rows[1]["details"]["split_leakage"].items() if k != "hashes"
    }
    results = cross_dataset_leakage(rows, CFG["split_leakage"])
    (result,) = results.values()
    assert result.rule == "reported" and "not compared" in result.message and "fleet_images" in result.message
