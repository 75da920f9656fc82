"""The ``prompted-folder`` dataset: (image, concept) samples from masks named <id>__<concept>.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segcheck import SegcheckError
from segcheck import config as segconfig
from segcheck import plugins as segplugins
from segcheck.data import EvalData
from segcheck.gates import negative_prompt
from segcheck.gates.prompted import negative_pairs
from segcheck.model import ModelUnderTest
from segcheck.target import Target
from segcheck_plugins import prompted_folder
from segcheck_plugins.prompted_folder import PromptedFolder
from tests.test_datasets import registry_of, write_png

SIZE = (40, 48)
PROMPTS = {"crack": ["segment crack", "segment wall crack"], "taping": ["segment taping area", "segment joint/tape"]}
#: image id -> the concepts it has a mask for (d: none, still an image of the split)
ANNOTATED = {"a": ("crack", "taping"), "b": ("crack", "taping"), "c": ("crack",), "d": ()}


def write_yaml(root: Path, **config) -> None:
    root.mkdir(parents=True, exist_ok=True)
    config.setdefault("prompts", PROMPTS)
    (root / "dataset.yaml").write_text(yaml.safe_dump(config))


def make_layout(base: Path, annotated=ANNOTATED, values=(0, 255), seed: int = 0) -> dict[tuple[str, str], np.ndarray]:
    """images/<id>.png (RGB) and masks/<id>__<concept>.png (L, ``values``) under ``base``;
    returns each mask as 0/1."""
    rng = np.random.default_rng(seed)
    masks = {}
    for image_id, concepts in annotated.items():
        write_png(base / "images" / f"{image_id}.png", rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8))
        for concept in concepts:
            mask = (rng.random(SIZE) < 0.2).astype(np.uint8)
            write_png(
                base / "masks" / f"{image_id}__{concept}.png",
                np.where(mask == 1, values[1], values[0]).astype(np.uint8),
            )
            masks[image_id, concept] = mask.astype(np.int64)
    return masks


@pytest.fixture
def layout(tmp_path):
    masks = make_layout(tmp_path)
    write_yaml(tmp_path)
    return tmp_path, masks


def test_registered_and_loaded_as_a_builtin(layout):
    root, _ = layout
    entry = registry_of(prompted_folder).get("prompted-folder")
    assert entry.meta["needs_root"] is True
    assert len(entry.obj(root, "val")) == 5
    with pytest.raises(SegcheckError, match="needs --data-root"):
        entry.obj(None, "val")
    assert "segcheck_plugins.prompted_folder" in segplugins.BUILTIN_PLUGINS


def test_pairs_masks_and_spec(layout):
    root, masks = layout
    data = PromptedFolder(root, "val")
    pairs = [data.pair(i) for i in range(len(data))]
    assert pairs == [("a", "crack"), ("a", "taping"), ("b", "crack"), ("b", "taping"), ("c", "crack")]
    assert data.image_ids() == ("a", "b", "c", "d")  # d has no mask: no sample, still an image
    assert data.image("d").shape == (*SIZE, 3) and data.image("d").dtype == np.uint8
    for i, pair in enumerate(pairs):
        image, mask = data[i]
        assert image.dtype == np.uint8 and image.shape == (*SIZE, 3)
        assert mask.dtype == np.int64 and np.array_equal(mask, masks[pair])
        assert np.array_equal(image, np.asarray(Image.open(root / "images" / f"{pair[0]}.png")))
    spec = data.spec
    assert spec.classes == ("background", "foreground") and spec.prompted
    assert spec.concepts == ("crack", "taping") and spec.prompts_of("taping") == tuple(PROMPTS["taping"])
    assert spec.splits == ("train", "val", "test") and spec.ignore_index == 255 and spec.mean is None
    assert data.identity == f"prompted-folder:{root.resolve()}"
    eval_data = EvalData.from_dataset({"val": data}, "val", size=8, seed=0)
    assert eval_data.concepts == ("crack", "taping", "crack", "taping", "crack")
    assert eval_data.prompts(1)[1] == "segment joint/tape"


def test_split_folders_and_mask_values_0_1_with_ignore(tmp_path):
    make_layout(tmp_path / "train", {"t": ("crack",)})
    masks = make_layout(tmp_path / "val", {"v": ("taping",)}, values=(0, 1), seed=1)
    write_yaml(tmp_path, mask_values=[0, 1], ignore_index=255, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    ignored = np.where(np.arange(SIZE[1]) < 3, 255, masks["v", "taping"]).astype(np.uint8)
    write_png(tmp_path / "val" / "masks" / "v__taping.png", ignored)
    train, val = PromptedFolder(tmp_path, "train"), PromptedFolder(tmp_path, "val")
    assert train.spec.splits == ("train", "val") and train.pair(0) == ("t", "crack")
    assert val.spec.mean == (0.5, 0.5, 0.5)
    _, mask = val[0]
    assert set(np.unique(mask)) == {0, 1, 255} and np.array_equal(mask, ignored)
    with pytest.raises(SegcheckError, match=r"unknown split 'test' for prompted-folder.*train, val"):
        PromptedFolder(tmp_path, "test")


def test_images_without_masks_folder(tmp_path):
    make_layout(tmp_path, {"a": (), "b": ()})
    write_yaml(tmp_path)
    data = PromptedFolder(tmp_path, "val")
    assert len(data) == 0 and data.image_ids() == ("a", "b")


def one_line(info) -> str:
    assert "\n" not in str(info.value)
    return str(info.value)


def test_error_undeclared_concept(layout):
    root, _ = layout
    write_png(root / "masks" / "a__nails.png", np.zeros(SIZE, np.uint8))
    with pytest.raises(SegcheckError, match=r"a__nails\.png is for concept 'nails'.*does not declare") as info:
        PromptedFolder(root, "val")
    assert "crack, taping" in one_line(info)


def test_error_mask_without_image_or_separator(layout):
    root, _ = layout
    write_png(root / "masks" / "zz__crack.png", np.zeros(SIZE, np.uint8))
    with pytest.raises(SegcheckError, match=r"zz__crack\.png has no image: no zz\.\*"):
        PromptedFolder(root, "val")
    (root / "masks" / "zz__crack.png").rename(root / "masks" / "a.png")
    with pytest.raises(SegcheckError, match=r"a\.png is not named <image id>__<concept>\.png"):
        PromptedFolder(root, "val")


def test_error_bad_mask_value_names_file_and_values(layout):
    root, _ = layout
    mask = np.zeros(SIZE, np.uint8)
    mask[0, :3] = (1, 128, 255)
    write_png(root / "masks" / "b__taping.png", mask)
    data = PromptedFolder(root, "val")
    with pytest.raises(SegcheckError, match=r"b__taping\.png has values \[1, 128\], expected 0 .* and 255") as info:
        data[3]
    one_line(info)
    write_yaml(root, mask_values=[0, 1], ignore_index=255)  # now 1 is foreground, 255 ignore: 128 is still wrong
    with pytest.raises(SegcheckError, match=r"b__taping\.png has values \[128\].*or 255 \(ignore_index\)"):
        PromptedFolder(root, "val")[3]
    write_yaml(root, mask_values=[0, 1])  # 0/255 masks declared 0/1: the 255s are an error, never ignore
    with pytest.raises(SegcheckError, match=r"values \[128, 255\].*set mask_values: \[0, 255\] if they are 0/255"):
        PromptedFolder(root, "val")[3]
    write_yaml(root, ignore_index=255)
    with pytest.raises(SegcheckError, match=r"ignore_index 255 is one of mask_values"):
        PromptedFolder(root, "val")


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"prompts": None}, r"needs 'prompts', a mapping"),
        ({"prompts": {"crack": []}}, r"concept 'crack' has prompts \[\]; give a list of at least one"),
        ({"prompts": {"crack": "segment crack"}}, r"concept 'crack' has prompts 'segment crack'"),
        ({"prompts": {"wall crack": ["segment crack"]}}, r"concept name 'wall crack' is not file-name safe"),
        ({"mask_values": [0, 128]}, r"mask_values must be \[0, 255\] or \[0, 1\].*got \[0, 128\]"),
        ({"classes": ["a", "b"]}, r"unknown keys \['classes'\]"),
        ({"mask_values": [0, 1], "ignore_index": 1}, r"ignore_index 1 is one of mask_values"),
    ],
)
def test_error_bad_dataset_yaml(layout, config, match):
    root, _ = layout
    raw = {"prompts": PROMPTS, **config}
    (root / "dataset.yaml").write_text(yaml.safe_dump({k: v for k, v in raw.items() if v is not None}))
    with pytest.raises(SegcheckError, match=match) as info:
        PromptedFolder(root, "val")
    one_line(info)


def test_error_missing_dataset_yaml_or_root(tmp_path):
    make_layout(tmp_path)
    with pytest.raises(SegcheckError, match=r"dataset\.yaml is missing; write it with each concept's prompts"):
        PromptedFolder(tmp_path, "val")
    with pytest.raises(SegcheckError, match="does not exist or is not a folder"):
        PromptedFolder(tmp_path / "nope", "val")


class Constant(torch.nn.Module):
    """A prompted binary model that answers ``logit`` everywhere, whatever the image and prompt."""

    def __init__(self, logit: float):
        super().__init__()
        self.logit = torch.nn.Parameter(torch.tensor(float(logit)))

    def forward(self, x, prompts):
        return self.logit.expand(len(x), 1, *x.shape[-2:])


def test_an_all_background_mask_is_a_negative_pair_negative_prompt_judges(tmp_path):
    """masks/c__taping.png of 0s: image c is annotated as not showing taping."""
    make_layout(tmp_path, {**ANNOTATED, "c": ("crack", "taping")})
    write_png(tmp_path / "masks" / "c__taping.png", np.zeros(SIZE, np.uint8))
    write_yaml(tmp_path)
    data = EvalData.from_dataset({"val": PromptedFolder(tmp_path, "val")}, "val", size=8, seed=0)
    empty = Target(ModelUnderTest(Constant(-9.0), binary=True, prompted=True), data, "background")
    pairs = negative_pairs(empty)
    assert list(pairs) == ["taping"] and [data.concepts[i] for i in pairs["taping"]] == ["taping"]
    passed = negative_prompt(empty, segconfig.DEFAULTS["negative_prompt"])
    assert passed.passed and passed.value == 0.0 and passed.details["not_judged"] == ["crack"]
    painter = Target(ModelUnderTest(Constant(9.0), binary=True, prompted=True), data, "foreground")
    failed = negative_prompt(painter, segconfig.DEFAULTS["negative_prompt"])
    assert not failed.passed and failed.value == 1.0 and "the model paints 100.0% of the image" in failed.message
