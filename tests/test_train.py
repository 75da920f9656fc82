"""The bundled trainer: ingredients run, runs are deterministic, resuming gives the same weights."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
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
        shifts=True,
        scale_crops=True,
        photometric=True,
        consistency=0.1,
        photometric_consistency=0.1,
        jpeg_views=0.5,
        jpeg_on_views=0.5,
        view_shift=8,
        recon=0.5,
        outlier_exposure=0.1,
        outlier_paste=0.1,
        input_gradient=0.1,
        contrastive=0.1,
        **tiny,
    )
    sidecar = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert sidecar["recipe"]["outlier_paste"] == 0.1 and sidecar["recipe"]["contrastive"] == 0.1
    assert sidecar["recipe"]["shifts"] is True and sidecar["recipe"]["photometric_consistency"] == 0.1
    assert sidecar["model"] == "unet" and sidecar["dataset"] == "tiny-streets"
    assert sidecar["model_kwargs"] == {"recon_head": True, "embed_head": True}
    assert sidecar["recipe"]["consistency"] == 0.1 and sidecar["seed"] == 0 and sidecar["recipe"]["jpeg_views"] == 0.5
    assert sidecar["recipe"]["jpeg_on_views"] == 0.5
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


def test_averaged_weights_are_the_mean_of_the_last_epochs_and_resume_alike(tmp_path, tiny, monkeypatch):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    snapshots, real_epoch = [], loop.train_one_epoch

    def recorded(*args):
        loss = real_epoch(*args)
        snapshots.append({k: v.detach().clone() for k, v in args[1].module.state_dict().items()})
        return loss

    monkeypatch.setattr(loop, "train_one_epoch", recorded)
    train(recipe="naive", out=a, epochs=3, average_epochs=2, **tiny)
    saved = load_file(str(a))
    floats = [k for k in saved if saved[k].is_floating_point()]
    assert any(k.endswith("running_mean") for k in floats)  # BatchNorm statistics are averaged too
    for k in floats:
        torch.testing.assert_close(saved[k], (snapshots[1][k] + snapshots[2][k]) / 2)
    assert not torch.equal(saved[floats[0]], snapshots[2][floats[0]])
    assert yaml.safe_load(a.with_suffix(".yaml").read_text())["recipe"]["average_epochs"] == 2

    def interrupted(*args):
        if len(snapshots) == 5:  # b's third epoch
            raise KeyboardInterrupt
        return recorded(*args)

    monkeypatch.setattr(loop, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(recipe="naive", out=b, epochs=3, average_epochs=2, **tiny)
    monkeypatch.setattr(loop, "train_one_epoch", real_epoch)
    train(recipe="naive", out=b, epochs=3, average_epochs=2, resume=True, **tiny)
    wb = load_file(str(b))
    assert all(torch.equal(saved[k], wb[k]) for k in saved)
    with pytest.raises(SegcheckError, match=r"average_epochs \(--average-epochs\) is 4; .* 0 to 3"):
        train(recipe="naive", out=tmp_path / "c.safetensors", epochs=3, average_epochs=4, **tiny)


def test_resume_without_state_is_an_error(tmp_path, tiny):
    with pytest.raises(SegcheckError, match="nothing to resume"):
        train(recipe="naive", out=tmp_path / "x.safetensors", epochs=1, resume=True, **tiny)


def test_init_starts_from_the_checkpoint_and_the_sidecar_names_it(tmp_path, tiny):
    first, tuned = tmp_path / "first.safetensors", tmp_path / "tuned.safetensors"
    train(recipe="naive", out=first, epochs=1, **tiny)
    train(recipe="naive", out=tuned, epochs=1, lr=1e-12, init=first, seed=1, **tiny)  # a learning rate of ~0
    start, end = load_file(str(first)), load_file(str(tuned))
    weights = [k for k in start if k.endswith(".weight")]
    assert weights and all(torch.allclose(start[k], end[k], atol=1e-6) for k in weights)
    assert yaml.safe_load(tuned.with_suffix(".yaml").read_text())["init"] == "first.safetensors"
    fresh = tmp_path / "fresh.safetensors"
    train(recipe="naive", out=fresh, epochs=1, lr=1e-12, seed=1, **tiny)
    assert not all(torch.allclose(start[k], load_file(str(fresh))[k], atol=1e-6) for k in weights)


def test_init_that_does_not_fit_the_model_is_one_error(tmp_path, tiny):
    first = tmp_path / "first.safetensors"
    train(recipe="naive", out=first, epochs=1, **tiny)
    with pytest.raises(SegcheckError, match="does not fit the model"):
        train(
            recipe="naive", out=tmp_path / "deeper.safetensors", epochs=1, init=first, model_args={"depth": 4}, **tiny
        )


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
    with pytest.raises(SegcheckError, match=r"a segcheck_configure hook \(.*\): eval.size must be a whole number"):
        train(recipe="naive", out=tmp_path / "n.safetensors", epochs=1, **tiny)


def test_pasted_outliers_leave_the_cross_entropy_and_get_the_uniform_loss():
    from segcheck.data import DatasetSpec
    from segcheck.train import augment
    from segcheck.train.recipes import get

    g = torch.Generator().manual_seed(0)
    x = torch.zeros(8, 3, 32, 48)
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    pasted_x, pasted = augment.paste_outliers(x, g, mean, std)
    assert pasted.dtype == torch.bool and 0 < int(pasted.any((1, 2)).sum()) < 8  # about half the images
    assert torch.equal(pasted_x[:, :, ~pasted.any(0)], x[:, :, ~pasted.any(0)])  # nothing else changed
    assert (pasted_x.permute(0, 2, 3, 1)[pasted] * std.flatten() + mean.flatten()).clamp(0, 1).std() > 0.05
    spec = DatasetSpec(("a", "b", "c"))
    recipe = get("naive").with_(outlier_paste=1.0)
    y = torch.zeros(8, 32, 48, dtype=torch.long).masked_fill(pasted, spec.ignore_index)
    uniform = torch.zeros(8, 3, 32, 48)  # the uniform prediction: the paste term is at its minimum, ln 3
    sure = torch.zeros(8, 3, 32, 48)
    sure[:, 0] = 10.0  # sure of class 0 everywhere, pasted pixels included: right outside them, punished inside
    ce = loop.criterion([sure], pasted_x, y, get("naive"), spec)
    with_paste = loop.criterion([sure], pasted_x, y, recipe, spec, pasted=pasted)
    expected = -sure.log_softmax(1).mean(1)[pasted].mean()
    assert torch.isclose(with_paste - ce, expected) and expected > 3
    assert torch.isclose(
        loop.criterion([uniform], pasted_x, y, recipe, spec, pasted=pasted)
        - loop.criterion([uniform], pasted_x, y, get("naive"), spec),
        torch.log(torch.tensor(3.0)),
    )


def test_a_resume_state_from_before_a_setting_existed_resumes_at_its_default(tmp_path):
    from segcheck.train.recipes import get
    from segcheck.train.trainer import _restore

    module = torch.nn.Conv2d(3, 2, 1)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    older = {k: v for k, v in get("naive").to_dict().items() if k != "outlier_paste"}
    state = {"recipe": older, "model": module.state_dict(), "optimizer": optimizer.state_dict()}
    torch.save({**state, "scheduler": scheduler.state_dict(), "epoch": 3}, tmp_path / "s.resume.pt")
    assert _restore(tmp_path / "s.resume.pt", module, optimizer, scheduler, get("naive")) == 3
    with pytest.raises(SegcheckError, match="resume with the same recipe"):
        _restore(tmp_path / "s.resume.pt", module, optimizer, scheduler, get("naive").with_(outlier_paste=0.1))


TINY_DRYWALL = """
from segcheck.hookspecs import hookimpl
from segcheck_plugins.synthetic_drywall import SyntheticDrywall

@hookimpl
def segcheck_register_datasets(registry):
    registry.add("tiny-drywall", lambda root, split: SyntheticDrywall(split, images=8, size=(32, 32)))
"""


def test_a_prompted_model_trains_with_the_binary_recipes(tmp_path):
    path = tmp_path / "tiny_drywall.py"
    path.write_text(TINY_DRYWALL)
    kw = dict(model="unet-prompted", dataset="tiny-drywall", plugin_specs=[str(path)], device="cpu", progress=False)
    for recipe in ("naive-binary", "focal-binary", "robust-binary"):
        out = tmp_path / f"{recipe}.safetensors"
        result = train(recipe=recipe, out=out, epochs=1, batch_size=4, flips=True, photometric=True, **kw)
        sidecar = yaml.safe_load(out.with_suffix(".yaml").read_text())
        assert sidecar["classes"] == ["background", "foreground"] and sidecar["recipe"]["name"] == recipe
        assert sidecar["prompts"]["crack"] == ["segment crack", "segment wall crack"]
        assert set(result.val_foreground_iou) <= {"crack", "taping"} and result.val_foreground_iou
        assert sidecar["val_foreground_iou"] == {c: round(v, 4) for c, v in result.val_foreground_iou.items()}
        assert 0 <= result.val_miou <= 1
    with pytest.raises(SegcheckError, match="takes no text prompts, but the training data asks by prompt"):
        train(recipe="naive", model="unet", out=tmp_path / "x.safetensors", epochs=1,
              **{k: v for k, v in kw.items() if k != "model"})  # fmt: skip


def test_binary_losses_balanced_dice_focal():
    from segcheck.data import DatasetSpec
    from segcheck.loss import dice_loss, pixel_loss
    from segcheck.train.recipes import get

    spec = DatasetSpec(("background", "foreground"))
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[:, :2] = 1  # a quarter foreground
    y[0, 7, 7] = 255  # ignored
    logits = torch.zeros(2, 1, 8, 8)
    assert torch.isclose(pixel_loss(logits, y, spec, binary=True), torch.log(torch.tensor(2.0)))
    # focal with p_true = 0.5 everywhere: the plain loss times 0.5 ** gamma
    assert torch.isclose(pixel_loss(logits, y, spec, binary=True, focal=2.0), torch.log(torch.tensor(2.0)) * 0.25)
    perfect = torch.where(y == 1, 20.0, -20.0).float()[:, None]
    assert dice_loss(perfect, y, spec) < 1e-3 and torch.isclose(
        dice_loss(-perfect, y, spec), torch.tensor(1.0), atol=0.05
    )

    class Masks:
        def __init__(self):
            self.spec = spec

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return None, y[i].numpy()

    weights = loop.class_weights(get("robust-binary"), Masks())
    assert weights[0] == 1 and torch.isclose(weights[1], torch.tensor((95 / 127) / (32 / 127)))
    assert loop.class_weights(get("naive-binary"), Masks()) is None
    with pytest.raises(SegcheckError, match="losses of a binary"):
        loop.criterion(
            [torch.zeros(2, 3, 8, 8)], None, y.clamp(max=2), get("robust-binary"), DatasetSpec(("a", "b", "c"))
        )


def test_pixel_contrast_loss_pulls_classes_together_across_images():
    from segcheck.data import DatasetSpec
    from segcheck.loss import pixel_contrast_loss

    spec = DatasetSpec(("a", "b", "c"))
    torch.manual_seed(0)
    y = torch.randint(0, 3, (4, 8, 8))
    y[0, 0, 0] = 255  # ignored pixels are never drawn
    by_class = torch.eye(3)[y.clamp(0, 2)].permute(0, 3, 1, 2)  # one direction per class
    random = torch.randn(4, 3, 8, 8, requires_grad=True)
    separated, mixed = pixel_contrast_loss(by_class * 5, y, spec), pixel_contrast_loss(random, y, spec)
    assert separated < 0.5 * mixed
    mixed.backward()
    assert random.grad.abs().sum() > 0
    single = pixel_contrast_loss(random, torch.full((4, 8, 8), 255), spec)  # nothing counted: 0, attached
    assert single == 0 and single.requires_grad


def test_input_gradient_penalty_is_exp_of_minus_the_input_gradient_norm():
    from segcheck.data import DatasetSpec
    from segcheck.loss import pixel_loss
    from segcheck.train.recipes import get

    spec = DatasetSpec(("a", "b"))
    conv = torch.nn.Conv2d(3, 2, 1)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = torch.randint(0, 2, (2, 4, 4))
    recipe = get("naive").with_(input_gradient=0.1)
    loss = loop.criterion([conv(x)], x, y, recipe, spec)
    (grad,) = torch.autograd.grad(pixel_loss(conv(x), y, spec), x)
    assert torch.isclose(loss, pixel_loss(conv(x), y, spec) + 0.1 * torch.exp(-grad.norm()))
    loss.backward()  # differentiated through: the penalty reaches the weights
    with_penalty = conv.weight.grad.clone()
    conv.weight.grad = None
    pixel_loss(conv(x), y, spec).backward()
    assert not torch.allclose(with_penalty, conv.weight.grad)
    with pytest.raises(SegcheckError, match="input batch does not require grad"):
        loop.criterion([conv(x.detach())], x.detach(), y, recipe, spec)
    with pytest.raises(SegcheckError, match="builder must accept embed_head=True"):
        loop.criterion([conv(x)], x, y, get("naive").with_(contrastive=0.1), spec)


def test_shifts_translate_image_and_mask_together_and_ignore_the_uncovered_band():
    from segcheck.train import augment

    torch.manual_seed(0)
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8).repeat(1, 3, 1, 1)
    y = torch.arange(2 * 8 * 8).reshape(2, 8, 8) % 7
    g = torch.Generator().manual_seed(3)
    sx, sy = augment.shifts(x.clone(), y.clone(), g, ignore_index=255, fraction=0.25)
    moved = 0
    for i in range(2):
        kept = sy[i] != 255
        band = ~kept
        moved += int(band.any())
        # every kept pixel's label came with its image value: no wrap-around, image and mask aligned
        source = sx[i, 0][kept].long() - i * 64
        assert torch.equal(y[i].flatten()[source], sy[i][kept])
        assert band.sum() <= 8 * 8 - 6 * 6  # at most two pixels of each side (a quarter of 8)
    assert moved  # seed 3 draws a non-zero offset


def test_multiclass_dice_weighs_each_present_class_and_ignores_absent_ones():
    from segcheck.data import DatasetSpec
    from segcheck.loss import dice_loss

    spec = DatasetSpec(("a", "b", "c", "d"))
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[:, :, 6:] = 1  # class 1 is rare, 2 and 3 absent
    y[0, 0, 0] = 255
    perfect = torch.nn.functional.one_hot(y.clamp(max=3), 4).permute(0, 3, 1, 2).float() * 40
    assert dice_loss(perfect, y, spec, binary=False) < 1e-2
    all_first = torch.zeros(2, 4, 8, 8)
    all_first[:, 0] = 40  # right on 3/4 of the pixels, but class 1 missed: loss about 1/2
    missed = dice_loss(all_first, y, spec, binary=False)
    assert 0.4 < missed < 0.6
    logits = torch.zeros(2, 4, 8, 8, requires_grad=True)
    dice_loss(logits, y, spec, binary=False).backward()
    assert logits.grad.abs().sum() > 0
    nothing = dice_loss(logits, torch.full((2, 8, 8), 255), spec, binary=False)
    assert nothing == 0 and nothing.requires_grad


def test_unet_padding_modes():
    from segcheck_plugins.unet import build_unet

    torch.manual_seed(0)
    blank = torch.full((1, 3, 32, 64), 0.7)
    spread = {}
    for padding in ("zeros", "reflect"):
        model = build_unet(4, padding=padding).eval()
        with torch.no_grad():
            spread[padding] = float(model(blank).std(dim=(2, 3)).max())
    assert spread["reflect"] < 1e-3 < spread["zeros"]  # zero padding tells where the border is
    with pytest.raises(ValueError, match="unet padding must be one of zeros, reflect, replicate"):
        build_unet(4, padding="circularish")


@pytest.mark.parametrize("photometric", ["identity", "real"])
def test_the_photometric_view_moves_with_the_image(tmp_path, tiny, monkeypatch, photometric):
    """With the photometric change replaced by the identity, the view is the clean batch after
    the same flips, rolls, shifts, crops and pastes, so KL(clean || view) is 0; a real change is not."""
    from segcheck.train import augment

    if photometric == "identity":
        monkeypatch.setattr(augment, "photometric", lambda images, g, p=0.5: images.clone())
    kls, real_kl = [], loop._kl_from_clean

    def recorded(*args):
        kl = real_kl(*args)
        kls.append(float(kl.detach()))
        return kl

    monkeypatch.setattr(loop, "_kl_from_clean", recorded)
    ingredients = dict(flips=True, rolls=True, shifts=True, scale_crops=True, outlier_paste=0.1)
    train(recipe="naive", out=tmp_path / "v.safetensors", epochs=1, photometric_consistency=1.0, **ingredients, **tiny)
    assert len(kls) == 4  # 32 images, batches of 8
    if photometric == "identity":
        assert max(kls) < 1e-5
    else:
        assert min(kls) > 1e-4


def test_photometric_consistency_needs_its_view():
    from segcheck.train.recipes import get

    recipe = get("naive").with_(photometric_consistency=0.1)
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(SegcheckError, match="no photometric view"):
        loop.forward(torch.nn.Conv2d(3, 2, 1), x, recipe, torch.ones(1, 3, 1, 1))
    outputs = loop.forward(torch.nn.Conv2d(3, 2, 1), x, recipe, torch.ones(1, 3, 1, 1), view=x + 1)
    assert len(outputs) == 2 and outputs[0].shape == outputs[1].shape == (2, 2, 8, 8)


def test_jpeg_views_replace_that_share_of_the_views_by_a_jpeg_round_trip():
    from segcheck import perturb
    from segcheck.train import augment

    images = torch.randint(0, 256, (8, 16, 16, 3), dtype=torch.uint8)
    views = torch.zeros_like(images)
    kept = augment.jpeg_views(images, views, torch.Generator().manual_seed(0), 0.0)
    assert torch.equal(kept, views)
    every = augment.jpeg_views(images, views, torch.Generator().manual_seed(0), 1.0)
    assert not torch.equal(every, views) and torch.equal(views, torch.zeros_like(images))  # a copy
    many = torch.randint(0, 256, (64, 16, 16, 3), dtype=torch.uint8)
    half = augment.jpeg_views(many, torch.zeros_like(many), torch.Generator().manual_seed(0), 0.5)
    replaced = [bool(v.any()) for v in half]
    assert any(replaced) and not all(replaced)  # a share in between replaces some views, not all
    for image, view in zip(images, every):  # each one the image's own round trip at a quality 30-94
        trips = [perturb.jpeg_roundtrip(Image.fromarray(image.numpy()), q) for q in range(30, 95)]
        assert any(np.array_equal(view.numpy(), trip) for trip in trips)


def test_jpeg_views_need_photometric_consistency_and_a_share():
    from segcheck.train.recipes import get

    with pytest.raises(SegcheckError, match="photometric_consistency is 0"):
        get("naive").with_(jpeg_views=0.5)
    with pytest.raises(SegcheckError, match=r"jpeg_views \(--jpeg-views\) is 1.5, outside its range \[0, 1\]"):
        get("naive").with_(photometric_consistency=1.0, jpeg_views=1.5)
    assert get("naive").with_(photometric_consistency=1.0, jpeg_views=1.0).jpeg_views == 1.0
    with pytest.raises(SegcheckError, match=r"jpeg_on_views shapes the photometric-consistency views"):
        get("naive").with_(jpeg_on_views=0.5)
    with pytest.raises(SegcheckError, match=r"jpeg_on_views \(--jpeg-on-views\) is -0.1, outside its range"):
        get("naive").with_(photometric_consistency=1.0, jpeg_on_views=-0.1)


def test_jpeg_on_views_round_trips_the_photometric_view_itself(tmp_path, tiny, monkeypatch):
    """With ``jpeg_on_views`` a view keeps its photometric change and is JPEG-compressed on
    top (the round trip is of the view, not of the clean image); without it no JPEG view is
    drawn, so older recipes train as before."""
    from segcheck.train import augment

    calls = []
    real = augment.jpeg_views

    def spy(source, views, g, p):
        calls.append((source is views, p))
        return real(source, views, g, p)

    monkeypatch.setattr(augment, "jpeg_views", spy)
    common = dict(recipe="naive", epochs=1, photometric_consistency=0.1, **tiny)
    train(out=tmp_path / "plain.safetensors", **common)
    assert calls == []
    train(out=tmp_path / "on.safetensors", jpeg_on_views=0.5, **common)
    assert calls and all(call == (True, 0.5) for call in calls)


def test_a_shifted_view_is_compared_with_the_clean_prediction_shifted_alike():
    from segcheck import perturb
    from segcheck.train import augment
    from segcheck.train.recipes import get

    logits = torch.randn(2, 3, 16, 24)
    for offset, axis in ((5, -2), (-3, -1)):
        equivariant = perturb.shift(logits, offset, axis)  # a model whose output moves with its input
        assert float(loop._kl_from_clean(logits, equivariant, (offset, axis))) < 1e-6
        assert float(loop._kl_from_clean(logits, logits, (offset, axis))) > 0.01  # one that stays put
    draws = {augment.view_shift((16, 24), torch.Generator().manual_seed(s), 8) for s in range(200)}
    assert {axis for _, axis in draws} == {-2, -1} and {abs(o) for o, _ in draws} == set(range(1, 9))
    assert augment.view_shift((16, 24), torch.Generator().manual_seed(0), 0) is None
    small = [augment.view_shift((4, 4), torch.Generator().manual_seed(s), 9) for s in range(50)]
    assert max(abs(offset) for offset, _ in small) == 3  # never the whole side
    with pytest.raises(SegcheckError, match="photometric_consistency is 0"):
        get("naive").with_(view_shift=8)
    with pytest.raises(SegcheckError, match=r"view_shift \(--view-shift\) is -1"):
        get("naive").with_(photometric_consistency=1.0, view_shift=-1)
