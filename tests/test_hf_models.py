"""The Hugging Face adapter (segcheck_plugins.hf_models): tiny models built offline from a
config.json or a save_pretrained folder, loaded strictly, normalized from the folder."""

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: any download attempt fails
import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from segcheck import SegcheckError  # noqa: E402
from segcheck import config as segconfig  # noqa: E402
from segcheck.gates.audits import head_matches_classes  # noqa: E402
from segcheck.model import SegModel  # noqa: E402
from segcheck.target import TargetSpec, module_meta, resolve  # noqa: E402
from segcheck_plugins import hf_models  # noqa: E402
from tests.test_datasets import make_folder, write_config  # noqa: E402

SEGFORMER = "hf:SegformerForSemanticSegmentation"
_VIT = dict(hidden_size=16, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=16)


def _tiny(name: str):
    """A tiny config of transformers class ``name`` (some leave encoder layers unused, as real ones do)."""
    t = transformers
    return {
        "SegformerForSemanticSegmentation": lambda: t.SegformerConfig(
            hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16
        ),
        "UperNetForSemanticSegmentation": lambda: t.UperNetConfig(
            backbone_config=t.ConvNextConfig(
                hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1], out_features=["stage1", "stage2", "stage3", "stage4"]
            ),
            hidden_size=16,
            auxiliary_channels=8,
            pool_scales=[1, 2],
        ),
        "DPTForSemanticSegmentation": lambda: t.DPTConfig(
            **_VIT, num_hidden_layers=5, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 16, 16]
        ),
        "BeitForSemanticSegmentation": lambda: t.BeitConfig(
            **_VIT, num_hidden_layers=6, out_indices=[2, 3, 4, 5], pool_scales=[1, 2], auxiliary_channels=8
        ),
        "Data2VecVisionForSemanticSegmentation": lambda: t.Data2VecVisionConfig(
            **_VIT, num_hidden_layers=4, out_indices=[1, 2, 3, 4], pool_scales=[1, 2], auxiliary_channels=8
        ),
        "MobileViTForSemanticSegmentation": lambda: t.MobileViTConfig(
            image_size=32,
            hidden_sizes=[16, 16, 16],
            neck_hidden_sizes=[8, 8, 8, 8, 8, 16, 16],
            num_attention_heads=2,
            aspp_out_channels=16,
            expand_ratio=2.0,
        ),
        "MobileViTV2ForSemanticSegmentation": lambda: t.MobileViTV2Config(
            image_size=32, width_multiplier=0.25, aspp_out_channels=16
        ),
        "MobileNetV2ForSemanticSegmentation": lambda: t.MobileNetV2Config(depth_multiplier=0.1, image_size=32),
    }[name]()


def _segformer(num_labels: int = 3, seed: int = 0):
    config = _tiny("SegformerForSemanticSegmentation")
    config.num_labels = num_labels
    torch.manual_seed(seed)
    return transformers.SegformerForSemanticSegmentation(config).eval()


@pytest.fixture(scope="module")
def plugins():
    from segcheck import plugins as segplugins

    return segplugins.load()


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    make_folder(root, stems=("a", "b"), size=(61, 77))
    write_config(root)  # classes: background, road, car
    return root


def _resolve(plugins, data_root, checkpoint=None, **spec):
    config = segconfig.load(overrides={"eval": {"size": 2}})
    return resolve(plugins, TargetSpec(spec.pop("model", SEGFORMER), "folder", checkpoint=checkpoint,
                                       data_root=data_root, device="cpu", **spec), config)  # fmt: skip


def test_the_static_list_is_transformers_semantic_segmentation_classes():
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES as mapping

    known = set(mapping.values())
    assert set(hf_models.MODELS) <= known and not set(hf_models.MODELS) & set(hf_models.EXCLUDED)
    assert known <= set(hf_models.MODELS) | set(hf_models.EXCLUDED), "a new class: register it or say why not"
    assert all(hasattr(transformers, name) for name in hf_models.MODELS)


@pytest.mark.parametrize("name", sorted(hf_models.MODELS))
def test_each_class_builds_from_a_config_json_with_logits_at_an_odd_size(name, plugins, tmp_path):
    config = _tiny(name)
    config.num_labels = 7  # an architecture: the head is sized for the dataset, whatever the file says
    path = tmp_path / "config.json"
    config.to_json_file(path)
    entry = plugins.models.get(f"hf:{name}")
    torch.manual_seed(0)
    module = entry.obj(3, config=str(path))
    assert type(module).__name__ == name and module.config.num_labels == 3
    meta = module_meta(entry.meta, module)
    model = SegModel(module, mean=(0.5,) * 3, std=(0.25,) * 3, divisible_by=meta["divisible_by"])
    x = torch.randn(2, 3, 61, 77)
    with torch.no_grad():
        (fed_h, fed_w), (raw_h, raw_w) = model.pad(x).shape[-2:], model.raw(x).shape[-2:]
    assert fed_h % raw_h == 0 and fed_w % raw_w == 0 and fed_h // raw_h == fed_w // raw_w  # pixels line up
    model.module.train()
    logits = model.logits(x)
    assert logits.shape == (2, 3, 61, 77) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    no_gradient = {k for k, p in module.named_parameters() if p.grad is None}
    assert no_gradient == {k for k, _ in module.named_parameters() if k.startswith(meta["frozen"])}


def test_a_save_pretrained_folder_loads_strictly_and_predicts_as_the_original(plugins, data_root, tmp_path):
    original = _segformer()
    folder = tmp_path / "segformer"
    original.save_pretrained(folder)
    transformers.SegformerImageProcessor(image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]).save_pretrained(folder)
    saved = load_file(folder / "model.safetensors")
    assert set(saved) != set(original.state_dict())  # transformers 5 saves other names than it holds in memory

    target = _resolve(plugins, data_root, folder)
    n = target.model.normalization
    assert n.mean == pytest.approx((0.4, 0.5, 0.6)) and n.std == pytest.approx((0.2, 0.25, 0.3))
    assert n.source.startswith(f"preprocessor_config.json of checkpoint folder {folder}")
    assert target.describe()["normalization"]["source"] == n.source
    assert "checkpoint folder: model.safetensors" in target.describe()["checkpoint"]
    for key, value in original.state_dict().items():
        assert torch.equal(target.model.module.state_dict()[key], value)
    same = SegModel(original, mean=n.mean, std=n.std, divisible_by=target.model.divisible_by)
    expected, _ = same.predict_pixels(target.data.images)
    assert (target.predictions.labels == expected).all()
    fresh = target.model.fresh(seed=1).module  # a random-init copy of the same config
    assert fresh.config.to_dict() == target.model.module.config.to_dict()
    assert not torch.equal(fresh.decode_head.classifier.weight, original.decode_head.classifier.weight)


def test_a_folder_sidecar_wins_over_its_preprocessor_and_states_the_classes(plugins, data_root, tmp_path):
    folder = tmp_path / "segformer"
    _segformer().save_pretrained(folder)
    processor = {"do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    (folder / "segcheck.yaml").write_text("mean: [0.1, 0.2, 0.3]\nstd: [0.3, 0.3, 0.3]\n")
    n = _resolve(plugins, data_root, folder).model.normalization
    assert n.mean == (0.1, 0.2, 0.3) and n.source == f"checkpoint sidecar {folder / 'segcheck.yaml'}"
    (folder / "segcheck.yaml").write_text("classes: [sky, sea, sand]\n")
    with pytest.raises(SegcheckError, match="was trained on 3 classes"):
        _resolve(plugins, data_root, folder)


@pytest.mark.parametrize(
    "processor, mean, std",
    [
        ({"do_rescale": True, "do_flip_channel_order": True}, (0, 0, 0), (1, 1, 1)),  # MobileViT: no do_normalize
        ({"do_normalize": True, "do_rescale": False, "image_mean": [127.5] * 3, "image_std": [51] * 3}, (0.5,) * 3,
         (0.2,) * 3),
    ],
)  # fmt: skip
def test_preprocessor_normalization_in_segchecks_terms(tmp_path, processor, mean, std):
    from segcheck import checkpoint

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    got_mean, got_std, source = checkpoint.folder_normalization(tmp_path)
    assert got_mean == pytest.approx(mean) and got_std == pytest.approx(std) and "preprocessor_config.json" in source
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, "image_mean": [0.5] * 3}))
    with pytest.raises(SegcheckError, match="has image_std None; expected three numbers > 0"):
        checkpoint.folder_normalization(tmp_path)


def test_sharded_and_pytorch_bin_folders_load(plugins, data_root, tmp_path):
    original = _segformer()
    original.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "config.json").write_text((tmp_path / "sharded" / "config.json").read_text())
    state = {}
    for shard in sorted((tmp_path / "sharded").glob("*.safetensors")):
        state.update(load_file(shard))
    torch.save(state, bin_folder / "pytorch_model.bin")
    for folder in (tmp_path / "sharded", bin_folder):
        module = _resolve(plugins, data_root, folder).model.module
        assert torch.equal(module.decode_head.classifier.weight, original.decode_head.classifier.weight)


def test_a_folder_whose_keys_carry_another_prefix_fails_with_one_line(plugins, data_root, tmp_path):
    folder = tmp_path / "wrapped"
    _segformer().save_pretrained(folder)
    state = load_file(folder / "model.safetensors")
    save_file({"model." + k: v for k, v in state.items()}, folder / "model.safetensors")
    with pytest.raises(SegcheckError) as error:
        _resolve(plugins, data_root, folder)
    message = str(error.value)
    assert "\n" not in message and "key prefixes are matched exactly" in message
    assert "start with 'model.segformer.' where the model's start with 'segformer.'" in message


def test_a_folder_saved_from_another_class_is_refused(plugins, data_root, tmp_path):
    transformers.SegformerModel(_tiny("SegformerForSemanticSegmentation")).save_pretrained(tmp_path / "base")
    with pytest.raises(SegcheckError, match=r"was saved from \['SegformerModel'\].*not SegformerForSemantic"):
        _resolve(plugins, data_root, tmp_path / "base")


def test_a_trained_head_is_kept_and_the_head_gate_reports_both_numbers(plugins, data_root, tmp_path):
    _segformer(num_labels=5).save_pretrained(tmp_path / "five")
    target = _resolve(plugins, data_root, tmp_path / "five")
    result = head_matches_classes(target)
    assert not result.passed and (result.value, result.threshold) == (5, 3)
    assert "head has 5 channels, dataset has 3 classes" in result.message


def test_a_config_arg_is_an_architecture_and_a_folder_without_weights_too(plugins, data_root, tmp_path):
    _segformer(num_labels=5).config.save_pretrained(tmp_path / "arch")
    for config in (tmp_path / "arch" / "config.json", tmp_path / "arch"):
        target = _resolve(plugins, data_root, model_args=(("config", str(config)),))
        assert target.model.module.config.num_labels == 3
        assert target.model.normalization.source.startswith("ImageNet")
    with pytest.raises(SegcheckError, match="is built from a local config: pass --model-arg config="):
        _resolve(plugins, data_root)


def test_nothing_is_downloaded(plugins, data_root, tmp_path):
    config = _tiny("UperNetForSemanticSegmentation").to_dict()
    config.update(backbone="microsoft/resnet-50", backbone_config=None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(SegcheckError, match="names backbone 'microsoft/resnet-50' without its backbone_config"):
        _resolve(plugins, data_root, model="hf:UperNetForSemanticSegmentation",
                 model_args=(("config", str(tmp_path / "config.json")),))  # fmt: skip
    _segformer().config.to_json_file(tmp_path / "config.json")
    with pytest.raises(SegcheckError, match="is a 'segformer' config, not 'beit'"):
        _resolve(plugins, data_root, model="hf:BeitForSemanticSegmentation",
                 model_args=(("config", str(tmp_path / "config.json")),))  # fmt: skip


def test_a_bgr_image_processor_flips_the_channels(tmp_path):
    config = _tiny("MobileViTForSemanticSegmentation")
    config.num_labels = 3
    torch.manual_seed(0)
    original = transformers.MobileViTForSemanticSegmentation(config).eval()
    original.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_rescale": True, "do_flip_channel_order": True}))
    built = hf_models.build("MobileViTForSemanticSegmentation", 3, config=tmp_path)
    built.load_state_dict(original.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(built.eval()(x).logits, original(x.flip(1)).logits)


def test_segcheck_list_shows_the_hf_models(capsys):
    from segcheck.cli import main

    assert main(["list"]) == 0
    assert SEGFORMER in capsys.readouterr().out


def test_trainer_losses_run_on_an_hf_model():
    """The training loop's extra views split a ModelOutput into plain dicts of its tensors."""
    from segcheck.data import DatasetSpec
    from segcheck.train.loop import criterion, forward
    from segcheck.train.recipes import Recipe

    module = _segformer().train()
    spec = DatasetSpec(classes=("background", "road", "car"))
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    std = torch.full((1, 3, 1, 1), 0.25)
    for recipe in (Recipe("consistency", consistency=0.1), Recipe("oe", outlier_exposure=0.1)):
        loss = criterion(forward(module, x, recipe, std), x, y, recipe, spec)
        assert torch.isfinite(loss)
        loss.backward()
