"""Checkpoints: safe formats, wrappers, strict loading with named mismatches, refused pickles."""

import collections

import pytest
import torch

from segcheck import SegcheckError, checkpoint
from segcheck_plugins.torchvision_models import build
from segcheck_plugins.unet import build_unet
from tests.conftest import build_target


class Evil:
    """Unpickling this would need code execution."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_safetensors_round_trip_with_sidecar(tmp_path):
    model = build_unet(4)
    path = checkpoint.save(model, tmp_path / "m.safetensors", {"classes": ["a", "b", "c", "d"]})
    fresh = checkpoint.load_into(build_unet(4), path)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    assert checkpoint.read_sidecar(path) == {"classes": ["a", "b", "c", "d"]}


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": s},
        lambda s: {"model": s, "epoch": 3},
        lambda s: {"module." + k: v for k, v in s.items()},
    ],
    ids=["plain", "state_dict", "model+epoch", "ddp-prefix"],
)
def test_pt_state_dicts_and_common_wrappers(tmp_path, wrap):
    model = build_unet(3)
    path = tmp_path / "m.pt"
    torch.save(wrap(model.state_dict()), path)
    checkpoint.load_into(build_unet(3), path)


def test_13_class_head_against_14_class_data_names_the_shapes(tmp_path):
    path = tmp_path / "lraspp13.pt"
    torch.save(build("lraspp_mobilenet_v3_large", 13).state_dict(), path)
    with pytest.raises(SegcheckError) as info:
        checkpoint.load_into(build("lraspp_mobilenet_v3_large", 14), path)
    message = str(info.value)
    assert (
        "shape mismatch" in message
        and "classifier.low_classifier.weight (13, 40, 1, 1) vs model (14, 40, 1, 1)" in message
    )
    assert "\n" not in message


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = collections.OrderedDict(build_unet(3).state_dict())
    state.pop("head.bias")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "m.pt"
    torch.save(state, path)
    with pytest.raises(SegcheckError, match=r"missing keys: head\.bias; unexpected keys: extra\.weight"):
        checkpoint.load_into(build_unet(3), path)


def test_code_executing_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(SegcheckError, match="needs code execution.*runs no pickled code unless told to"):
        checkpoint.read_state_dict(path)
    assert "pwned" not in capsys.readouterr().out


def test_whole_pickled_model_is_refused(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(build_unet(3), path)
    with pytest.raises(SegcheckError, match="needs code execution"):
        checkpoint.read_state_dict(path)


@pytest.mark.parametrize(
    "name, payload", [("junk.pt", b"not a checkpoint at all" * 10), ("junk.safetensors", b"\x00\x01garbage")]
)
def test_corrupt_files_are_clear_errors(tmp_path, name, payload):
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(
        SegcheckError, match="is not a PyTorch checkpoint \\(torch.save writes|not a readable safetensors"
    ):
        checkpoint.read_state_dict(path)


def test_missing_file(tmp_path):
    with pytest.raises(SegcheckError, match="does not exist"):
        checkpoint.read_state_dict(tmp_path / "nope.pt")


def test_dict_without_state_dict_names_its_keys(tmp_path):
    path = tmp_path / "opt.pt"
    torch.save({"optimizer": 1, "epoch": 2}, path)
    with pytest.raises(SegcheckError, match=r"keys \['epoch', 'optimizer'\] but no state dict"):
        checkpoint.read_state_dict(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_state_dict_keys_lists_names_without_loading_into_a_model(tmp_path, suffix):
    model = build("lraspp_mobilenet_v3_large", 3)
    path = tmp_path / f"m{suffix}"
    if suffix == ".pt":
        torch.save(model.state_dict(), path)
    else:
        checkpoint.save(model, path, {})
    assert sorted(checkpoint.state_dict_keys(path)) == sorted(model.state_dict())


@pytest.mark.parametrize("aux", [True, False])
def test_torchvision_aux_head_is_built_only_when_the_checkpoint_has_one(tmp_path, aux, loaded_plugins):
    from segcheck import config

    path = tmp_path / "deeplab.pt"
    torch.save(build("deeplabv3_mobilenet_v3_large", 8, aux_loss=aux).state_dict(), path)
    target = build_target(
        loaded_plugins, config.load(), "deeplabv3_mobilenet_v3_large", "synthetic-streets", checkpoint=path
    )
    assert (target.model.module.aux_classifier is not None) is aux


@pytest.mark.parametrize("zip_format", [True, False])
def test_state_dict_keys_of_current_and_legacy_torch_files(tmp_path, zip_format):
    state = {"backbone.weight": torch.ones(2, 3), "aux_classifier.0.weight": torch.zeros(1)}
    path = tmp_path / "m.pt"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)  # legacy files cannot be memory-mapped
    assert checkpoint.state_dict_keys(path) == list(state)


def _checkpoint_with_sidecar(tmp_path, **sidecar):
    """A random unet checkpoint for synthetic-streets whose sidecar says ``sidecar``."""
    from segcheck_plugins.synthetic_streets import SyntheticStreets

    path = tmp_path / "unet.safetensors"
    classes = list(SyntheticStreets("val", length=1).spec.classes)
    checkpoint.save(build_unet(len(classes)), path, {"classes": classes, **sidecar})
    return path


def test_model_under_test_normalizes_as_its_checkpoint_was_trained(tmp_path, loaded_plugins):
    from segcheck import config

    path = _checkpoint_with_sidecar(tmp_path, mean=[0.1, 0.2, 0.3], std=[0.4, 0.5, 0.6])
    target = build_target(loaded_plugins, config.load(), "unet", "synthetic-streets", checkpoint=path)
    assert target.model.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert target.model.std.flatten().tolist() == pytest.approx([0.4, 0.5, 0.6])
    assert target.model.normalization.source.startswith("checkpoint sidecar")
    # a fresh module of the architecture has no trained weights: it gets the dataset's normalization
    assert target.model.fresh(0).mean.flatten().tolist() == pytest.approx(target.data.spec.mean)


@pytest.mark.parametrize(
    "bad", [{"mean": [0.5, 0.5]}, {"std": [0.2, 0.0, 0.2]}, {"std": "imagenet"}, {"mean": [123.675, 116.28, 103.53]}]
)
def test_malformed_sidecar_normalization_is_named(tmp_path, loaded_plugins, bad):
    from segcheck import config

    with pytest.raises(SegcheckError, match=rf"sidecar of .* has {next(iter(bad))} .* expected three numbers in"):
        build_target(
            loaded_plugins,
            config.load(),
            "unet",
            "synthetic-streets",
            checkpoint=_checkpoint_with_sidecar(tmp_path, **bad),
        )
