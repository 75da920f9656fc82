"""``segcheck predict``: the files it writes for prompted and closed-set models (random init, tiny data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcheck import SegcheckError, cli
from segcheck.data import DatasetSpec
from segcheck.predict import prompt_names, safe_name
from tests.test_datasets import make_folder, write_config, write_png
from tests.test_prompted_folder import SIZE, make_layout, write_yaml

PROMPT_FILES = ("segment_crack", "segment_wall_crack", "segment_taping_area", "segment_joint_tape")


def run(*argv) -> int:
    return cli.main(["predict", "--checkpoint", "none", "--device", "cpu", "--quiet", *map(str, argv)])


def pngs(out: Path) -> dict[str, np.ndarray]:
    """``{file name: pixel values}`` of the PNGs in ``out``, each checked single-channel."""
    found = {}
    for path in sorted(out.glob("*.png")):
        with Image.open(path) as im:
            assert im.mode in ("L", "I;16"), path
            found[path.name] = np.asarray(im)
    return found


def test_prompted_folder_every_image_and_prompt(tmp_path, capsys):
    make_layout(tmp_path / "data")  # images a-d; d has no mask, c only a crack mask: all predicted
    write_yaml(tmp_path / "data")
    out = tmp_path / "pred"
    assert run("--model", "unet-prompted", "--dataset", "prompted-folder", "--data-root", tmp_path / "data",
               "--out", out, "--batch-size", "3") == 0  # fmt: skip
    files = pngs(out)
    assert sorted(files) == sorted(f"{i}__{p}.png" for i in "abcd" for p in PROMPT_FILES)
    for values in files.values():
        assert values.shape == SIZE and values.dtype == np.uint8 and set(np.unique(values)) <= {0, 255}
    assert capsys.readouterr().out.strip() == f"wrote 16 masks (4 images x 4 prompts, split val) to {out}"


def test_synthetic_drywall_through_its_pairs(tmp_path, capsys):
    out = tmp_path / "pred"
    assert run("--model", "unet-prompted", "--dataset", "synthetic-drywall", "--limit", "2", "--out", out) == 0
    prompts = ("segment_crack", "segment_wall_crack", "segment_taping_area", "segment_joint_tape")
    names = {f"val_{i:04d}__{p}.png" for i in range(2) for p in (*prompts, "segment_drywall_seam")}
    files = pngs(out)
    assert set(files) == names and all(v.shape == (64, 64) and set(np.unique(v)) <= {0, 255} for v in files.values())
    assert "wrote 10 masks (2 images x 5 prompts, split val)" in capsys.readouterr().out


def test_closed_set_label_maps_by_index(tmp_path):
    out = tmp_path / "pred"
    assert (
        run("--model", "unet", "--dataset", "synthetic-streets", "--split", "test", "--limit", "2", "--out", out) == 0
    )
    files = pngs(out)
    assert sorted(files) == ["0000.png", "0001.png"]
    for values in files.values():
        assert values.shape == (64, 128) and values.dtype == np.uint8 and values.max() < 8


def test_closed_set_folder_ids_mixed_sizes_and_resize(tmp_path):
    make_folder(tmp_path / "data", stems=("a", "b"), size=(16, 20))
    rng = np.random.default_rng(1)
    write_png(tmp_path / "data" / "images" / "c.png", rng.integers(0, 256, (12, 8, 3), dtype=np.uint8))
    write_png(tmp_path / "data" / "masks" / "c.png", np.zeros((12, 8), np.uint8))
    write_config(tmp_path / "data")
    args = ("--model", "unet", "--dataset", "folder", "--data-root", tmp_path / "data")
    assert run(*args, "--out", tmp_path / "own") == 0  # two sizes, batched by size
    files = pngs(tmp_path / "own")
    assert {k: v.shape for k, v in files.items()} == {"a.png": (16, 20), "b.png": (16, 20), "c.png": (12, 8)}
    assert all(v.max() < 3 for v in files.values())
    assert run(*args, "--out", tmp_path / "resized", "--eval-resize", "8x8") == 0
    assert {v.shape for v in pngs(tmp_path / "resized").values()} == {(8, 8)}


def test_safe_names_and_colliding_prompts():
    assert safe_name("segment joint/tape") == "segment_joint_tape" and safe_name("a-b_c9") == "a-b_c9"
    spec = DatasetSpec(classes=("background", "foreground"), prompts={"x": ["a b", "c"], "y": ["d", "a/b"]})
    with pytest.raises(SegcheckError, match=r"prompts 'a b' and 'a/b' both become 'a_b'"):
        prompt_names(spec)
    spec = DatasetSpec(classes=("background", "foreground"), prompts={"x": ["a b", "c"], "y": ["d"]})
    assert prompt_names(spec) == {"a b": "a_b", "c": "c", "d": "d"}


def test_errors_are_one_line(tmp_path, capsys):
    assert run("--model", "unet-prompted", "--dataset", "synthetic-streets", "--out", tmp_path / "p") == 2
    assert "takes a text prompt, but dataset 'synthetic-streets' declares no prompts" in capsys.readouterr().err
    assert run("--model", "unet", "--dataset", "prompted-folder", "--out", tmp_path / "p") == 2
    assert "reads files: pass --data-root" in capsys.readouterr().err
    assert cli.main(["predict", "--model", "unet", "--dataset", "synthetic-drywall", "--out", str(tmp_path)]) == 2
    assert "bundles no checkpoint for dataset 'synthetic-drywall'" in capsys.readouterr().err
