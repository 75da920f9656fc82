"""Bad inputs a user really gives: each is one clear line (or a failing gate with the reason),
never a traceback, never a pass on what could not be judged."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segcheck import SegcheckError, checkpoint
from segcheck import config as segconfig
from segcheck.plugins import load
from segcheck_plugins.unet import build_unet
from tests.conftest import REPO, build_target
from tests.test_datasets import make_folder, write_config
from tests.test_pytest_plugin import run_gates

# --- settings out of range -------------------------------------------------------------------


@pytest.mark.parametrize(
    "section, key, value, bounds",
    [
        ("noise_input", "max_miou", -1, "(0, 1]"),
        ("perturbation_stability", "min_agreement", 0, "(0, 1]"),
        ("perturbation_stability", "max_miou_drop", 1, "[0, 1)"),
        ("eval", "size", -5, "[1, inf)"),
        ("overfit_tiny", "epochs", 0, "[1, inf)"),
        ("overfit_tiny", "lr", 0.0, "(0, inf)"),
        ("label_quality", "max_flagged_share", 1.5, "[0, 1]"),
        ("label_quality", "pixels_per_image", 16, "[64, inf)"),
        ("split_leakage", "max_distance", 0.6, "[0, 0.5]"),
        ("split_shift", "max_divergence", -0.1, "[0, 1]"),
        ("perturbation_stability", "severity", 6, "[0, 5]"),
        ("calibration", "max_ece", 1.5, "[0, 1]"),
        ("calibration", "bins", 0, "[1, 1000]"),
        ("error_analysis", "dilation_ratio", 0.0, "(0, 1)"),
        ("error_analysis", "worst_images", 0, "[1, inf)"),
        ("negative_prompt", "max_share", -0.1, "[0, 1]"),
    ],
)
def test_a_setting_outside_its_range_names_setting_value_and_range(section, key, value, bounds):
    with pytest.raises(SegcheckError) as info:
        segconfig.load(overrides={section: {key: value}})
    assert str(info.value) == f"command line: {section}.{key} is {value!r}, outside its range {bounds}"


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("label_quality", "train_images", 2.5, "must be a whole number, got 2.5"),
        ("split_leakage", "max_distance", "close", "must be a number, got 'close'"),
        ("split_leakage", "fleet_images", True, "must be a whole number, got True"),
    ],
)
def test_audit_settings_are_typed(section, key, value, expected):
    with pytest.raises(SegcheckError) as info:
        segconfig.load(overrides={section: {key: value}})
    assert str(info.value) == f"command line: {section}.{key} {expected}"


def test_every_numeric_setting_has_a_range_its_default_is_in():
    for section, values in segconfig.DEFAULTS.items():
        for key, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                assert key in segconfig.RANGES or f"{section}.{key}" in segconfig.RANGES, f"{section}.{key}"
                segconfig.check_range(section, key, value, "default")


def test_malformed_config_yaml_is_one_line(tmp_path):
    path = tmp_path / "segcheck.yaml"
    path.write_text("noise_input: {max_miou: [0.1\n")
    with pytest.raises(SegcheckError, match=r"config file .*segcheck.yaml is not valid YAML \("):
        segconfig.load(path)


# --- plugins and sidecars that break ------------------------------------------------------------


def test_a_plugin_hook_that_raises_is_one_line_naming_the_plugin(tmp_path):
    plugin = tmp_path / "broken.py"
    plugin.write_text("def segcheck_register_models(registry):\n    raise KeyError('oops')\n")
    with pytest.raises(SegcheckError, match=r"plugin .*broken.py: its segcheck_register_models raised KeyError"):
        load([str(plugin)])
    result = subprocess.run(
        [sys.executable, "-m", "segcheck.cli", "list", "--plugin", str(plugin)], capture_output=True, text=True
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "its segcheck_register_models raised KeyError" in result.stderr


def test_a_malformed_sidecar_names_its_file(tmp_path):
    path = tmp_path / "unet.safetensors"
    checkpoint.save(build_unet(8), path, {})
    path.with_suffix(".yaml").write_text("classes: [a, b\n")
    with pytest.raises(SegcheckError, match=r"checkpoint sidecar .*unet.yaml is not valid YAML"):
        checkpoint.read_sidecar(path)


# --- checkpoints: say what the file is ----------------------------------------------------------


@pytest.mark.parametrize(
    "payload, message",
    [
        (bytes(range(256)) * 4, "is not a PyTorch checkpoint (torch.save writes a zip archive or a pickle"),
        (b"\x08\x07\x12\x07pytorch\x1a\x032.1" + bytes(64), "is not a PyTorch checkpoint"),  # ONNX's header
    ],
    ids=["random bytes", "onnx"],
)
def test_a_file_that_is_no_pytorch_checkpoint_is_not_blamed_on_pickles(tmp_path, payload, message):
    path = tmp_path / "model.pt"
    path.write_bytes(payload)
    with pytest.raises(SegcheckError) as info:
        checkpoint.read_state_dict(path)
    assert message in str(info.value) and "code execution" not in str(info.value)


def test_a_safetensors_file_named_pt_says_so(tmp_path):
    path = tmp_path / "model.safetensors"
    checkpoint.save(build_unet(8), path, {})
    renamed = path.rename(tmp_path / "model.pt")
    with pytest.raises(SegcheckError, match="is a safetensors file with another suffix; rename it to .safetensors"):
        checkpoint.read_state_dict(renamed)


@pytest.mark.parametrize("prefix", ["model.", "module."])
def test_a_wrapper_prefix_is_stripped_only_when_every_key_then_matches(tmp_path, prefix):
    state = {prefix + k: v for k, v in build_unet(8).state_dict().items()}
    path = tmp_path / "lightning.pt"
    torch.save({"state_dict": state}, path)
    model = checkpoint.load_into(build_unet(8), path)
    assert torch.equal(model.head.weight, state[prefix + "head.weight"])
    state.pop(prefix + "head.bias")
    torch.save({"state_dict": state}, path)
    with pytest.raises(SegcheckError, match=rf"every key starts with '{prefix}', but without it the keys still do"):
        checkpoint.load_into(build_unet(8), path)


def test_the_report_says_a_prefix_was_stripped(pytester):
    state = {"model." + k: v for k, v in build_unet(8).state_dict().items()}
    torch.save({"state_dict": state}, pytester.path / "lightning.ckpt")
    result, report = run_gates(pytester, "--checkpoint", "lightning.ckpt", "-k", "finite_outputs")
    assert result.ret == 0, result.stdout.str()
    assert "key prefix 'model.' stripped" in report["targets"]["unet"]["checkpoint"]


def test_trust_checkpoint_loads_a_whole_pickled_model_with_a_warning(pytester):
    torch.save(build_unet(8), pytester.path / "whole.pt")
    result, _ = run_gates(pytester, "--checkpoint", "whole.pt", "-k", "finite_outputs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*needs code execution*pass --trust-checkpoint if you trust this file*"])
    result, report = run_gates(pytester, "--checkpoint", "whole.pt", "--trust-checkpoint", "-k", "finite_outputs")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["segcheck WARNING: --trust-checkpoint: *whole.pt may run code when unpickled*"])
    assert "TRUSTED" in report["targets"]["unet"]["checkpoint"]


# --- data -----------------------------------------------------------------------------------


def test_a_missing_data_root_is_named_before_any_checkpoint_question(pytester):
    result, _ = run_gates(pytester, "--dataset", "folder", "--data-root", "nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*data root nowhere does not exist or is not a folder*"])
    assert "checkpoint" not in result.stderr.str()


def test_jpeg_masks_are_an_error_not_unpaired_images(tmp_path):
    from segcheck_plugins.folder import FolderDataset

    make_folder(tmp_path, stems=("a", "b"))
    write_config(tmp_path)
    Image.fromarray(np.zeros((8, 12), np.uint8)).save(tmp_path / "masks" / "c.jpg")
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "images" / "c.png")
    with pytest.raises(SegcheckError, match=r"masks \[c\] in .* are not PNG .*JPEG changes label values"):
        FolderDataset(tmp_path, "val")


# --- reproducible random init ---------------------------------------------------------------------


def test_a_random_init_target_is_the_same_model_every_run_and_says_its_seed(pytester):
    args = ("--model", "lraspp_mobilenet_v3_large", "--checkpoint", "none", "--eval-size", "4", "-k", "noise_input")
    reports = [run_gates(pytester, *args, *extra)[1] for extra in ([], [], ["-n", "2"])]
    values = [[(g["gate"], g["value"], g["details"]) for g in r["gates"]] for r in reports]
    assert values[0] == values[1] == values[2]
    assert reports[0]["targets"]["lraspp_mobilenet_v3_large"]["checkpoint"] == (
        "none (random init, target.init_seed 0)"
    )
    pytester.makefile(".yaml", seeded=yaml.safe_dump({"target": {"init_seed": 1}}))
    other = run_gates(pytester, *args, "--segcheck-config", "seeded.yaml")[1]
    assert other["targets"]["lraspp_mobilenet_v3_large"]["checkpoint"] == "none (random init, target.init_seed 1)"


def test_init_seed_decides_the_random_weights(loaded_plugins):
    config = segconfig.load(overrides={"eval": {"size": 1}})
    weights = [
        build_target(
            loaded_plugins, config, "unet", "synthetic-streets", checkpoint="none", init_seed=seed
        ).model.module.head.weight.detach()
        for seed in (0, 0, 1)
    ]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


# --- the trainer's command line -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--epochs", "-1", "--out", "{tmp}/m.safetensors"], "argument --epochs: expected a positive int"),
        (["train", "--epochs", "1", "--out", "{tmp}/file/m.safetensors"], "--out {tmp}/file/m.safetensors: cannot"),
        (["ablate", "--out", "{tmp}/file/ab"], "--out {tmp}/file/ab/ablation.md: cannot write there"),
        (["ablate", "--out", "{tmp}/ab", "--dataset-variant", "hard"], "invalid choice: 'hard'"),
        (["ablate", "--out", "{tmp}/ab", "--prompted", "--dataset-variant", "shortcut"], "has no --dataset-variant"),
        (["train", "--input-gradient", "x", "--out", "{tmp}/m.safetensors"], "argument --input-gradient: invalid"),
    ],
)
def test_train_and_ablate_check_their_arguments_before_training(tmp_path, argv, message):
    (tmp_path / "file").write_text("a file, not a folder")
    argv = [a.format(tmp=tmp_path) for a in argv]
    result = subprocess.run([sys.executable, "-m", "segcheck.cli", *argv], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2, result.stderr
    assert message.format(tmp=tmp_path) in result.stderr and "Traceback" not in result.stderr


# --- gates that could not judge do not pass ---------------------------------------------------------

WEIGHT_INDEPENDENT = {"head_matches_classes", "output_size", "label_integrity", "input_normalization"}
WEIGHT_INDEPENDENT |= {"split_leakage", "split_shift"}  # they compare the data's splits: no model involved
FRESH_MODEL = {"loss_at_init", "gradient_coverage"}  # judge a fresh copy of the architecture, not these weights


def test_nan_weights_pass_no_gate_that_reads_the_predictions(pytester):
    model = build_unet(8)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    torch.save(model.state_dict(), pytester.path / "nan.pt")
    result, report = run_gates(pytester, "--checkpoint", "nan.pt", "-m", "not train", "--eval-size", "4")
    passed = {g["gate"] for g in report["gates"] if g["outcome"] == "passed"}
    assert passed <= WEIGHT_INDEPENDENT | FRESH_MODEL, passed
    outcomes = {g["gate"]: (g["outcome"], g["message"]) for g in report["gates"]}
    assert outcomes["finite_outputs"][0] == "failed"
    for name in ("shift_equivariance", "perturbation_stability[jpeg]", "generalization", "batch_independence"):
        assert outcomes[name] == ("error", f"{name} cannot judge this model: its logits on the eval images are not "
                                           "finite (NaN/inf; see finite_outputs)")  # fmt: skip
    assert "<= nan" not in result.stdout.str()


ONE_CLASS = """
import torch

def segcheck_register_models(registry):
    registry.add("one-class", lambda num_classes: OneClass(num_classes))

class OneClass(torch.nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, num_classes, 1)
        with torch.no_grad():
            self.conv.weight.mul_(1e-3)
            self.conv.bias.copy_(torch.arange(num_classes, 0, -1).float())  # class 0 wins everywhere

    def forward(self, x):
        return self.conv(x)
"""


def test_agreement_gates_say_when_the_clean_prediction_is_one_class(pytester):
    plugin = pytester.makepyfile(one_class=ONE_CLASS)
    args = ("--plugin", str(plugin), "--model", "one-class", "--checkpoint", "none", "--eval-size", "4")
    result, report = run_gates(pytester, *args, "-k", "shift or perturbation or collapse")
    outcomes = {g["gate"]: (g["outcome"], g["message"]) for g in report["gates"]}
    for name in ("shift_equivariance", *(f"perturbation_stability[{c}]" for c in ("jpeg", "brightness"))):
        assert outcomes[name][0] == "skipped"
        assert "the clean prediction is one class everywhere ('road')" in outcomes[name][1]
    assert outcomes["prediction_collapse"][0] == "failed"


# --- labels: every mask of every split -------------------------------------------------------------


def _split_folder(root, binary_255=False, bad_train_label=None):
    for split in ("train", "val"):
        rng = np.random.default_rng(len(split))
        for i in range(6):
            image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            mask = np.zeros((16, 16), np.uint8)
            mask[4:12, 4:12] = 255 if binary_255 is not None else 1
            if bad_train_label is not None and split == "train" and i == 5:
                mask[0, 0] = bad_train_label
            for kind, array in (("images", image), ("masks", mask)):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / split / kind / f"{i}.png")
    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": ["wall", "crack"], **(
        {"binary_255": True} if binary_255 else {})}))  # fmt: skip


@pytest.mark.parametrize("binary_255", [False, True])
def test_0_255_masks_without_binary_255_fail_label_integrity_naming_the_pattern(pytester, binary_255):
    _split_folder(pytester.path / "d", binary_255=binary_255)
    args = ("--dataset", "folder", "--data-root", "d", "--checkpoint", "none", "-k", "label_integrity")
    result, report = run_gates(pytester, *args)
    record = report["gates"][0]
    if binary_255:
        assert record["outcome"] == "passed", record["message"]
    else:
        assert record["outcome"] == "failed"
        assert "1 class occurs in no mask: crack" in record["message"]
        assert "declare binary_255: true" in record["message"]


def test_label_integrity_reads_every_mask_not_only_the_eval_sample(pytester):
    _split_folder(pytester.path / "d", binary_255=None, bad_train_label=7)
    args = ("--dataset", "folder", "--data-root", "d", "--checkpoint", "none", "--eval-size", "2")
    result, report = run_gates(pytester, *args, "-k", "label_integrity")
    record = report["gates"][0]
    assert record["outcome"] == "failed" and "1 masks rejected by the dataset" in record["message"]
    assert "d/train/masks/5.png has label values [7] outside 0..1" in record["message"]
    assert record["message"].startswith("12 masks read (train, val)")


def test_a_trusted_whole_model_with_an_aux_head_loads(tmp_path):
    from tests.conftest import with_model
    from tests.models import AuxNet

    plugins = with_model("auxnet", lambda num_classes, aux_loss=False: AuxNet(num_classes, aux_loss), aux_prefix="aux.")
    torch.save(AuxNet(8, aux_loss=True), tmp_path / "whole.pt")
    config = segconfig.load(overrides={"eval": {"size": 1}})
    target = build_target(plugins, config, "auxnet", "synthetic-streets", checkpoint=tmp_path / "whole.pt",
                          trust_checkpoint=True)  # fmt: skip
    assert isinstance(target.model.module, AuxNet) and target.model.module.aux is not None


def test_a_corrupt_pickle_names_its_cause_not_torchs_advice_to_disable_safety(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(bytes([0x80, 0x02, 0xAC, 0x00]) + bytes(32))
    with pytest.raises(SegcheckError) as info:
        checkpoint.read_state_dict(path)
    assert "is corrupt or not a PyTorch file" in str(info.value) and "weights_only" not in str(info.value)


@pytest.mark.parametrize("row, message", [({"trust_checkpoint": "false"}, "trust_checkpoint must be true or false"),
                                          ({"init_seed": -1}, "init_seed must be a whole number >= 0")])  # fmt: skip
def test_manifest_flags_are_typed(tmp_path, loaded_plugins, row, message):
    from segcheck.manifest import read_manifest

    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump({"targets": [{"model": "unet", **row}]}))
    with pytest.raises(SegcheckError, match=message):
        read_manifest(tmp_path / "fleet.yaml", loaded_plugins, {"dataset": "synthetic-streets"})
