"""The bundled trainer: ingredients run, runs are deterministic, resuming gives the same weights."""

import pytest
import torch
import yaml
from safetensors.torch import load_file

from segcheck import SegcheckError
from segcheck.train import loop, train

TINY = """
from segcheck.hookspecs import hookimpl
from segcheck_plugins.synthetic_streets import SyntheticStreets

@hookimpl
def segcheck_register_datasets(registry):
    registry.add("tiny-streets", lambda root, split: SyntheticStreets(split, length=32, size=(32, 64)))
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    return dict(
        model="unet", dataset="tiny-streets", plugin_specs=[str(path)], device="cpu", progress=False, batch_size=8
    )


def test_every_ingredient_trains_and_writes_checkpoint_with_sidecar(tmp_path, tiny):
    out = tmp_path / "new" / "folder" / "all.safetensors"  # folders are created
    result = train(
        recipe="naive",
        out=out,
        epochs=1,
        flips=True,
        rolls=True,
        scale_crops=True,
        photometric=True,
        consistency=0.1,
        recon=0.5,
        outlier_exposure=0.1,
        **tiny,
    )
    sidecar = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert sidecar["model"] == "unet" and sidecar["dataset"] == "tiny-streets"
    assert sidecar["model_kwargs"] == {"recon_head": True}
    assert sidecar["recipe"]["consistency"] == 0.1 and sidecar["seed"] == 0
    assert sidecar["classes"][0] == "road" and len(sidecar["mean"]) == 3
    assert sidecar["data_identity"].startswith("synthetic-streets:seed=0:size=32x64")
    assert 0 <= result.val_miou <= 1 and sidecar["val_miou"] == round(result.val_miou, 4)
    assert not out.with_suffix(".resume.pt").exists()


def test_same_seed_same_weights_and_resume_matches(tmp_path, tiny, monkeypatch):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    train(recipe="robust", out=a, epochs=2, **tiny)
    calls = []
    real_epoch = loop.train_one_epoch

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(loop, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(recipe="robust", out=b, epochs=2, **tiny)
    assert b.with_suffix(".resume.pt").exists() and not b.exists()
    monkeypatch.setattr(loop, "train_one_epoch", real_epoch)
    train(recipe="robust", out=b, epochs=2, resume=True, **tiny)
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_without_state_is_an_error(tmp_path, tiny):
    with pytest.raises(SegcheckError, match="nothing to resume"):
        train(recipe="naive", out=tmp_path / "x.safetensors", epochs=1, resume=True, **tiny)


def test_unknown_recipe_setting_is_an_error(tmp_path, tiny):
    with pytest.raises(SegcheckError, match="unknown recipe settings"):
        train(recipe="naive", out=tmp_path / "x.safetensors", warmup=3, **tiny)


def test_segcheck_configure_runs_once_before_training(tmp_path, tiny):
    plugin = tmp_path / "conf.py"
    plugin.write_text(
        "def segcheck_configure(config):\n"
        f"    open({str(tmp_path / 'calls')!r}, 'a').write('x')\n"
        "    config['eval']['size'] = 4\n"
    )
    tiny["plugin_specs"].append(str(plugin))
    train(recipe="naive", out=tmp_path / "m.safetensors", epochs=1, **tiny)
    assert (tmp_path / "calls").read_text() == "x"
    plugin.write_text("def segcheck_configure(config):\n    config['eval']['size'] = 'four'\n")
    with pytest.raises(SegcheckError, match="a segcheck_configure hook: eval.size must be a whole number"):
        train(recipe="naive", out=tmp_path / "n.safetensors", epochs=1, **tiny)
