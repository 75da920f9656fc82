"""Issue 13's end-to-end check: smp DeepLabV3+ and a Hugging Face SegFormer folder run the
quick gates on a Cityscapes-layout tree whose image sides are not multiples of 16, without
an ERROR row (FAILs of a random model are expected)."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import REPO
from tests.test_layouts import write_cs

SIZE = (40, 56)  # 40 % 16 == 8, 56 % 16 == 8


def _tree(root):
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for i in range(2):
            mask = None if split == "test" else rng.integers(0, 34, SIZE)
            write_cs(root, split, "city", f"city_000000_00000{i}", mask, seed=i, size=SIZE)
    return root


def _smp_checkpoint(path):
    from segcheck_plugins.smp_models import build

    torch.manual_seed(0)
    save_file(build("DeepLabV3Plus", 19, encoder_name="resnet18").state_dict(), str(path))
    return ["--model", "smp:DeepLabV3Plus", "--model-arg", "encoder_name=resnet18", "--checkpoint", str(path)]


def _hf_folder(path):
    import transformers

    config = transformers.SegformerConfig(
        num_labels=19, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], decoder_hidden_size=16
    )
    config.num_attention_heads = [1, 1, 1, 1]
    torch.manual_seed(0)
    transformers.SegformerForSemanticSegmentation(config).save_pretrained(path)
    return ["--model", "hf:SegformerForSemanticSegmentation", "--checkpoint", str(path)]


MODELS = {"smp": ("segmentation_models_pytorch", _smp_checkpoint), "hf": ("transformers", _hf_folder)}


@pytest.mark.parametrize("family", list(MODELS))
def test_quick_gates_on_a_cityscapes_tree_not_divisible_by_16(pytester, tmp_path, family):
    package, checkpoint = MODELS[family]
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (the [{family}] extra)")
    root = _tree(tmp_path / "cityscapes")
    report = tmp_path / "report.json"
    args = checkpoint(tmp_path / ("dlv3p.safetensors" if family == "smp" else "segformer"))
    args += ["--dataset", "cityscapes", "--data-root", str(root), "--eval-size", "2", "--segcheck-report", str(report)]
    result = pytester.runpytest_subprocess(
        str(REPO / "suites" / "gates"), "-p", "no:cacheprovider", "-m", "not train", *args
    )
    records = json.loads(report.read_text())["gates"]
    errors = [f"{r['gate']}: {r['message']}" for r in records if r["outcome"] == "error"]
    assert len(records) >= 20 and not errors, errors or result.stdout.str()[-3000:]
    size = next(r for r in records if r["gate"] == "output_size")
    assert size["outcome"] == "passed" and size["details"]["input"] == list(SIZE), size["message"]
