"""Image sizes: divisible_by honoured wherever a module is called, the bundled unet at any
size, eval.resize for datasets of mixed sizes, and train-mode passes seeded."""

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from segcheck import SegcheckError, gates
from segcheck import config as segconfig
from segcheck.data import DatasetSpec, EvalData
from segcheck.model import SegModel
from segcheck.train import loop, train
from segcheck.train.recipes import get as get_recipe
from segcheck_plugins.unet import build_unet
from tests.conftest import REPO, build_target

STRICT = '''
import torch
from torch import nn
from segcheck.hookspecs import hookimpl
from segcheck_plugins.synthetic_streets import SyntheticStreets


class Strict(nn.Module):
    """Refuses inputs whose sides are not multiples of ``multiple`` (as smp models do);
    logits at half resolution; dropout in train mode (draws from the RNG)."""

    def __init__(self, num_classes, multiple=16, p=0.0):
        super().__init__()
        self.multiple = multiple
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.drop = nn.Dropout(p)
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        if x.shape[-2] % self.multiple or x.shape[-1] % self.multiple:
            raise RuntimeError(f"Wrong input shape height={x.shape[-2]}, width={x.shape[-1]}: not divisible")
        return self.head(self.drop(torch.relu(self.conv(x[..., ::2, ::2]))))


@hookimpl
def segcheck_register_models(registry):
    registry.add("strict", Strict, divisible_by=lambda module: module.multiple, args={"multiple": "size multiple"})


@hookimpl
def segcheck_register_datasets(registry):
    registry.add("odd-streets", lambda root, split: SyntheticStreets(split, length=16, size=(40, 56)))
'''


@pytest.fixture
def strict_plugin(tmp_path):
    path = tmp_path / "strict_plugin.py"
    path.write_text(STRICT)
    return path


def _target(strict_plugin, **spec):
    from segcheck import plugins as segplugins

    plugins = segplugins.load([str(strict_plugin)])
    config = segconfig.load(overrides={"eval": {"size": 4}})
    return build_target(plugins, config, "strict", "odd-streets", checkpoint="none", **spec), config


def test_the_bundled_unet_takes_any_size():
    unet = build_unet(8).eval()
    with torch.no_grad():
        assert unet(torch.zeros(1, 3, 61, 77)).shape == (1, 8, 61, 77)
        recon = build_unet(8, recon_head=True).eval()(torch.zeros(2, 3, 33, 20))
    assert recon["out"].shape == (2, 8, 33, 20) and recon["recon"].shape == (2, 3, 33, 20)


def test_divisible_by_from_the_module_reaches_every_gate_that_calls_it(strict_plugin):
    target, config = _target(strict_plugin, model_args=(("multiple", 16),))
    assert target.model.divisible_by == 16 and target.data.images.shape[1:3] == (40, 56)
    size = gates.output_size(target)
    assert size.passed and "padded to (48, 64)" in size.message and size.details["stride"] == 2
    for gate in (gates.loss_at_init, gates.gradient_coverage):
        result = gate(target, config[gate.__name__])
        assert np.isfinite(result.value), result.message
    cfg = {**config["overfit_tiny"], "samples": 2, "epochs": 1}
    assert 0 <= gates.overfit_tiny(target, cfg).value <= 1
    cfg = {**config["input_baseline"], "steps": 2, "samples": 4, "batch_size": 2}
    assert np.isfinite(gates.input_baseline(target, cfg).value)


def test_the_trainer_pads_to_divisible_by_and_passes_model_args(tmp_path, strict_plugin):
    out = tmp_path / "strict.safetensors"
    common = dict(out=out, device="cpu", progress=False, plugin_specs=[str(strict_plugin)], batch_size=4, epochs=1)
    train("strict", "odd-streets", "naive", model_args={"multiple": 16}, consistency=0.1, **common)
    sidecar = out.with_suffix(".yaml").read_text()
    assert "multiple: 16" in sidecar


def test_eval_resize_gives_one_size_and_mixed_sizes_name_the_setting():
    spec = DatasetSpec(("a", "b"))
    rng = np.random.default_rng(0)
    shapes = [(20, 24), (17, 23), (30, 18)]
    pairs = [(rng.integers(0, 255, (*s, 3), dtype=np.uint8), rng.integers(0, 2, s)) for s in shapes]

    class Mixed(list):
        pass

    split = Mixed(pairs)
    split.spec = spec
    with pytest.raises(SegcheckError, match=r"3 different sizes .*eval.resize"):
        EvalData.from_dataset({"val": split}, "val", 3, 0)
    fixed = EvalData.from_dataset({"val": split}, "val", 3, 0, resize="16x12")
    assert fixed.images.shape == (3, 16, 12, 3) and fixed.masks.shape == (3, 16, 12)
    short = EvalData.from_dataset({"val": split}, "val", 3, 0, resize="short:10")
    assert short.images.shape == (3, 10, 10, 3)
    assert set(np.unique(short.masks)) <= {0, 1}  # nearest: no label invented
    assert fixed.dataset("val")[2][0].shape == (16, 12, 3)  # every split read goes through the policy
    with pytest.raises(SegcheckError, match="is not a resize policy"):
        segconfig.load(overrides={"eval": {"resize": "512"}})


def test_eval_resize_keeps_labels_aligned_with_pixels():
    from segcheck import resize

    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 30:] = 255
    mask = np.zeros((40, 60), np.int64)
    mask[:, 30:] = 1
    small, labels = resize.apply("20x30", image, mask)
    assert (labels[:, 16:] == 1).all() and (labels[:, :14] == 0).all()
    assert (small[:, 16:] > 200).all() and (small[:, :14] < 50).all()
    cropped, labels = resize.apply("short:20", image, mask)  # 40x60 -> 20x30 -> centre 20x20 (columns 5..24)
    assert cropped.shape == (20, 20, 3) and (labels[:, 11:] == 1).all() and (labels[:, :9] == 0).all()


class FakeModelOutput(OrderedDict):
    """A Hugging Face ``ModelOutput`` in miniature: a dict whose values are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class HFLike(nn.Module):
    def __init__(self, num_classes=8):
        super().__init__()
        self.head = nn.Conv2d(3, num_classes, 1)

    def forward(self, x):
        return FakeModelOutput(logits=self.head(x)[..., ::4, ::4], hidden_states=(x,))


def test_the_trainer_losses_take_a_model_output_and_its_splits():
    spec = DatasetSpec(tuple("abcdefgh"))
    recipe = get_recipe("naive").with_(consistency=0.1, outlier_exposure=0.1)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 8, (2, 16, 16))
    outputs = loop.forward(HFLike(), x, recipe, torch.ones(1, 3, 1, 1))
    assert len(outputs) == 3
    loss = loop.criterion(outputs, x, y, recipe, spec)
    assert loss.requires_grad and torch.isfinite(loss)
    model = SegModel(HFLike(), mean=(0.5,) * 3, std=(0.5,) * 3)
    assert model.logits(x).shape == (2, 8, 16, 16)


def test_train_mode_numbers_do_not_depend_on_what_ran_before(strict_plugin):
    target, config = _target(strict_plugin, model_args=(("p", 0.5),))
    first = gates.loss_at_init(target, config["loss_at_init"]).value
    torch.rand(1000)  # another gate drew from the global RNG
    assert gates.loss_at_init(target, config["loss_at_init"]).value == first


def test_train_mode_gate_numbers_are_the_same_whichever_gates_are_selected(pytester, strict_plugin):
    values = []
    for n, selection in enumerate(["loss_at_init", "noise or gradient_coverage or loss_at_init"]):
        report = pytester.path / f"report{n}.json"
        args = ["--plugin", str(strict_plugin), "--model", "strict", "--model-arg", "p=0.5", "--checkpoint", "none"]
        args += ["--dataset", "odd-streets", "--eval-size", "4", "-k", selection, "--segcheck-report", str(report)]
        result = pytester.runpytest_subprocess(str(REPO / "suites" / "gates"), "-p", "no:cacheprovider", *args)
        assert result.ret in (0, 1), result.stdout.str()[-2000:]
        rows = {r["gate"]: r for r in json.loads(report.read_text())["gates"]}
        assert len(rows) > 2 or n == 0
        values.append(rows["loss_at_init"]["value"])
    assert values[0] == values[1]
