"""Messages that point the right way: a collapsed model is told it predicts one class (and why,
when BatchNorm statistics explain it), a random init that it has learnt nothing, a model at
the constant-class floor that it does not segment yet; none of them that it learnt a layout."""

import numpy as np
import torch
from PIL import Image
from torch import nn

from segcheck import config as segconfig
from segcheck import gates
from segcheck.gates.diagnosis import RANDOM_INIT
from tests.conftest import build_target, with_model

CFG = segconfig.DEFAULTS


class EvalCollapse(nn.Module):
    """Reads its image, but its BatchNorm running statistics are far from any batch's (as after
    a few training steps): one class everywhere in eval mode, several in train mode."""

    def __init__(self, num_classes: int = 8):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Conv2d(16, num_classes, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
        self.norm = nn.BatchNorm2d(16)
        self.norm.running_mean.fill_(50.0)
        self.norm.running_var.fill_(0.01)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.conv(x))))


def test_a_batchnorm_collapse_is_named_by_every_gate_it_fails(make_target):
    target = make_target(EvalCollapse())
    noise = gates.noise_input(target, CFG["noise_input"])
    prior = gates.positional_prior(target, CFG["positional_prior"])
    collapse = gates.prediction_collapse(target, CFG["prediction_collapse"])
    for result in (noise, prior):
        assert not result.passed and "the model predicts one class" in result.message, result.message
        assert "pixel position" not in result.message and "layout" not in result.message, result.message
    assert not collapse.passed
    assert collapse.details["eval_mode_classes"] == 1 < collapse.details["train_mode_classes"]
    assert "BatchNorm running statistics" in collapse.message and "model.eval()" in collapse.message


def test_a_random_init_is_told_it_has_learnt_nothing(loaded_plugins):
    config = segconfig.load(overrides={"eval": {"size": 8}})
    target = build_target(loaded_plugins, config, "unet", "synthetic-streets", checkpoint="none")
    for name in ("positional_prior", "prediction_collapse"):
        result = getattr(gates, name)(target, CFG[name])
        assert not result.passed and RANDOM_INIT in result.message, result.message
        assert "layout" not in result.message and "class imbalance" not in result.message, result.message


def test_a_model_at_the_constant_class_floor_is_told_it_does_not_segment_yet(make_target):
    torch.manual_seed(0)
    target = make_target(nn.Conv2d(3, 8, 1))  # the README's smallest model, untrained
    result = gates.noise_input(target, CFG["noise_input"])
    assert not result.passed, result.message
    assert "does not beat predicting" in result.message and "constant-class floor" in result.message, result.message
    assert "pixel position" not in result.message


class BrightSmoothLeft(nn.Module):
    """Finds 'thing' only where the image is bright and locally smooth, and only in the first
    columns of each band: it reads real images a little; noise is never smooth, so on noise it
    predicts 'background' everywhere."""

    def forward(self, x):
        gray = x.mean(1, keepdim=True)
        mean = nn.functional.avg_pool2d(gray, 3, 1, 1, count_include_pad=False)
        var = nn.functional.avg_pool2d(gray**2, 3, 1, 1, count_include_pad=False) - mean**2
        left = torch.arange(x.shape[-1], device=x.device) < x.shape[-1] // 8
        thing = (gray > 0.5) & (var < 0.05) & left
        return torch.cat([torch.zeros_like(gray), thing.float() * 10 - 5], 1)


def test_one_class_on_noise_with_a_weak_reading_of_real_images_is_named_not_called_a_layout(tmp_path):
    """Two classes, 'background' on 80% of the pixels: its constant-class floor (0.40) outscores
    the gate's threshold, the model beats it on real images by a little; on noise it predicts one
    class everywhere, which is no layout the model learnt."""
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        mask = np.zeros((64, 128), np.uint8)
        top = int(rng.integers(4, 40))
        mask[top : top + 13] = 1  # a band of 'thing', 20% of the pixels
        image = np.where(mask[..., None] == 1, 200, 60).astype(np.uint8).repeat(3, 2)
        Image.fromarray(image).save(tmp_path / "images" / f"{i:02d}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"{i:02d}.png")
    (tmp_path / "dataset.yaml").write_text("classes: [background, thing]\n")
    plugins = with_model("bright-left", lambda num_classes: BrightSmoothLeft(), builds_weights=True)
    config = segconfig.load(overrides={"eval": {"size": 16}})
    target = build_target(plugins, config, "bright-left", "folder", checkpoint="none", data_root=tmp_path)
    result = gates.noise_input(target, CFG["noise_input"])
    details = result.details
    assert not result.passed and details["constant_class_floor"] > CFG["noise_input"]["max_miou"], result.message
    assert details["constant_class_floor"] + 0.05 < details["real_miou"], result.message
    assert "on noise it predicts 'background' everywhere" in result.message, result.message
    assert "barely segments these data" in result.message and "pixel position" not in result.message
