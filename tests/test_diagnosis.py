"""Messages that point the right way: a collapsed model is told it predicts one class (and why,
when BatchNorm statistics explain it), a random init that it has learnt nothing, a model at
the constant-class floor that it does not segment yet; none of them that it learnt a layout."""

import torch
from torch import nn

from segcheck import config as segconfig
from segcheck import gates
from segcheck.gates.diagnosis import RANDOM_INIT
from tests.conftest import build_target

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
