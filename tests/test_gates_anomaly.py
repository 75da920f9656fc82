"""The anomaly gates and their shared evaluation, against scikit-learn on the same pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from segcheck import SegcheckError
from segcheck import anomaly as segan
from segcheck.config import DEFAULTS
from segcheck.data import DatasetSpec, EvalData
from segcheck.gates.anomaly import anomaly_detection, anomaly_free_training, anomaly_head, known_class_miou
from segcheck.gates.registered import NotApplicable
from segcheck.metrics.components import ComponentMetrics
from segcheck.model import ModelUnderTest
from segcheck.scoring import BUILTIN_SCORERS, score
from segcheck.target import Target
from segcheck_plugins.synthetic_streets import SyntheticStreets
from tests.models import ConstantModel
from tests.test_anomaly_datasets import sh_mask, write_sh

CFG = {**DEFAULTS["anomaly"], "max_images": 12, "stats_images": 16}


@pytest.fixture(scope="module")
def unet_target(loaded_plugins):
    from segcheck import config as segconfig
    from tests.conftest import build_target

    config = segconfig.load(overrides={"eval": {"size": 8}})
    return build_target(loaded_plugins, config, "unet", "synthetic-streets")


def _pixels(target, cfg):
    """Every scorer's map on the anomaly images the evaluation reads, computed here directly."""
    data = target.data
    dataset = data.dataset("anomaly")
    indices = segan.eval_indices(len(dataset), cfg["max_images"], data.seed)
    images, masks = segan.stack(dataset, indices)
    model = target.model
    with torch.no_grad():
        logits = model.logits(model.normalize(images)).float()
    stats = segan.max_logit_stats(target, cfg["stats_images"])
    context = {"temperature": cfg["temperature"], "class_stats": stats}
    maps = {n: score(f, logits, context, n).numpy() for n, f in BUILTIN_SCORERS.items()}
    return maps, masks == data.spec.anomaly_index, masks != data.spec.ignore_index


def _fpr95(y, s):
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return fpr[np.searchsorted(tpr, 0.95)]


def test_pooled_and_per_image_figures_equal_scikit_learn_on_the_same_pixels(unet_target):
    ev = segan.evaluate(unet_target, CFG)
    maps, ood, valid = _pixels(unet_target, CFG)
    assert ev.images == 12 and ev.anomaly_pixels == int((ood & valid).sum())
    for name, s in maps.items():
        r = ev.scorers[name]
        y, x = ood[valid], s[valid]
        assert r.pooled.exact
        assert r.pooled.auroc == pytest.approx(roc_auc_score(y, x), abs=1e-12)
        assert r.pooled.aupr == pytest.approx(average_precision_score(y, x), abs=1e-12)
        assert r.pooled.fpr == pytest.approx(_fpr95(y, x), abs=1e-12)
        per = [(o[v], m[v]) for o, m, v in zip(ood, s, valid) if o[v].any() and not o[v].all()]
        assert r.per_image.images == len(per)
        assert r.per_image.auroc == pytest.approx(np.mean([roc_auc_score(a, b) for a, b in per]), abs=1e-12)
        assert r.per_image.fpr == pytest.approx(np.mean([_fpr95(a, b) for a, b in per]), abs=1e-12)
        sizes = segan.component_sizes(CFG, s.shape[-1] * s.shape[-2])
        expected = ComponentMetrics(r.best_f1.threshold, inclusive=True, **sizes).update(s, ood, valid).compute()
        assert r.components == expected


def test_a_second_pass_gives_the_same_figures_when_the_maps_do_not_fit(unet_target, monkeypatch):
    kept = segan.evaluate(unet_target, CFG)
    monkeypatch.setattr(segan, "KEEP_BYTES", 0)
    streamed = segan._evaluate(unet_target, CFG, BUILTIN_SCORERS)
    assert kept.passes == 1 and streamed.passes == 2
    assert streamed.scorers == kept.scorers and streamed.known_miou == kept.known_miou


def test_the_evaluation_is_shared_by_the_gates(unet_target, monkeypatch):
    segan.evaluate(unet_target, CFG)
    monkeypatch.setattr(segan, "_evaluate", lambda *a: pytest.fail("computed twice"))
    assert anomaly_detection(unet_target, CFG, "msp").details["split"] == "anomaly"
    assert known_class_miou(unet_target, CFG).value == segan.evaluate(unet_target, CFG).known_miou


def _arrays_target(module, spec, splits, eval_split="val") -> Target:
    images, masks = splits[eval_split]
    data = EvalData(images, masks, spec, eval_split, splits={k: list(zip(*v)) for k, v in splits.items()})
    return Target(ModelUnderTest(module, normalization=None), data)


def _street(split, n=4):
    data = SyntheticStreets(split, length=n)
    images, masks = zip(*(data[i] for i in range(n)))
    return np.stack(images), np.stack(masks)


def test_head_with_one_channel_too_many_fails_naming_both():
    spec = SyntheticStreets("val").spec
    target = _arrays_target(ConstantModel(channels=9), spec, {"val": _street("val")})
    result = anomaly_head(target, CFG)
    assert not result.passed and (result.value, result.threshold) == (9, 8)
    assert "head has 9 channels for 8 known classes: one channel too many" in result.message
    assert "strict=False" in result.message
    assert anomaly_head(_arrays_target(ConstantModel(channels=8), spec, {"val": _street("val")}), CFG).passed


def test_anomaly_pixels_in_training_masks_fail_the_training_audit():
    spec = SyntheticStreets("val").spec
    clean = {"val": _street("val"), "train": _street("train")}
    assert anomaly_free_training(_arrays_target(ConstantModel(), spec, clean), CFG).passed
    images, masks = _street("train")
    masks = masks.copy()
    masks[2, :3, :3] = spec.anomaly_index
    dirty = _arrays_target(ConstantModel(), spec, {"val": _street("val"), "train": (images, masks)})
    result = anomaly_free_training(dirty, CFG)
    assert not result.passed and result.value == 1
    assert "4 training masks read, 1 hold anomaly pixels (label 8), 9 in all (e.g. train[2])" in result.message


def test_data_without_anomalies_skips_with_the_reason():
    spec = DatasetSpec(classes=("a", "b"))
    images = np.zeros((2, 8, 8, 3), np.uint8)
    target = _arrays_target(ConstantModel(channels=2), spec, {"val": (images, np.zeros((2, 8, 8), np.int64))})
    with pytest.raises(NotApplicable, match="declares no anomaly_index"):
        segan.evaluate(target, CFG)
    with pytest.raises(NotApplicable, match="declares no anomaly_index"):
        anomaly_free_training(target, CFG)


def test_non_finite_logits_are_an_error_not_a_verdict():
    spec = SyntheticStreets("val").spec
    target = _arrays_target(
        ConstantModel(value=float("nan")), spec, {"val": _street("val"), "anomaly": _street("anomaly")}
    )
    with pytest.raises(SegcheckError, match="logits on the 'anomaly' split are not finite"):
        segan.evaluate(target, CFG)


@pytest.mark.parametrize("channels, passed", [(14, False), (13, True)])
def test_a_14_channel_head_on_streethazards_13_known_classes_fails_the_head_audit(tmp_path, channels, passed):
    from segcheck import config as segconfig
    from tests.conftest import build_target, with_model

    plugins = with_model("constant", lambda num_classes: ConstantModel(channels=channels))
    config = segconfig.load()
    for split in ("train", "val", "test"):
        write_sh(tmp_path, split, "t1", "000", sh_mask())
    target = build_target(plugins, config, "constant", "streethazards", checkpoint="none", data_root=tmp_path)
    assert target.data.spec.num_classes == 13 and target.data.spec.anomaly_splits == ("test",)
    result = anomaly_head(target, config["anomaly"])
    assert result.passed is passed and result.value == channels
    if not passed:
        assert "head has 14 channels for 13 known classes: one channel too many" in result.message


def _registered(name):
    from segcheck.plugins import load

    return next(g for g in load((), entry_points=False).gates.gates("anomaly") if g.name == name)


def test_a_head_with_the_anomaly_as_a_class_fails_the_audit_and_the_other_gates_say_why():
    from segcheck.gates.registered import run

    spec = SyntheticStreets("val").spec
    splits = {"val": _street("val"), "anomaly": _street("anomaly"), "train": _street("train")}
    target = _arrays_target(ConstantModel(channels=9, value=1.0), spec, splits)
    config = {"anomaly": CFG}
    result = run(_registered("anomaly_head"), target, config)  # a FAIL, not an error about class 8
    assert not result.passed and "one channel too many" in result.message
    with pytest.raises(SegcheckError, match="head has 9 channels for 8 known classes.*see anomaly_head"):
        run(_registered("anomaly_detection[msp]"), target, config)


def test_a_failing_scorer_errors_alone_and_the_others_are_judged(unet_target):
    def broken(logits):
        return logits[:, 99]

    scorers = {"msp": BUILTIN_SCORERS["msp"], "broken": broken}
    ev = segan.evaluate(unet_target, CFG, scorers)
    assert set(ev.scorers) == {"msp"} and "scorer 'broken' raised IndexError" in ev.failed["broken"]
    target = Target(unet_target.model, unet_target.data, scorers=scorers)
    with pytest.raises(SegcheckError, match="scorer 'broken' raised IndexError"):
        anomaly_detection(target, CFG, "broken")
    assert anomaly_detection(target, CFG, "msp").value == ev.scorers["msp"].pooled.auroc


def test_a_skip_is_found_once_not_once_per_gate(monkeypatch):
    spec = SyntheticStreets("val").spec
    images, masks = _street("anomaly")
    clean = np.where(masks == spec.anomaly_index, 0, masks)  # an anomaly split without anomalies
    target = _arrays_target(ConstantModel(), spec, {"val": _street("val"), "anomaly": (images, clean)})
    calls = []
    real = segan._evaluate
    monkeypatch.setattr(segan, "_evaluate", lambda *a: calls.append(1) or real(*a))
    for _ in range(3):
        with pytest.raises(NotApplicable, match="holds no anomaly pixels"):
            segan.evaluate(target, CFG)
    assert calls == [1]


def test_a_folder_dataset_with_an_anomaly_index_is_judged_on_its_eval_split():
    spec = DatasetSpec(SyntheticStreets("val").spec.classes, anomaly_index=8)  # no anomaly_splits declared
    images, masks = _street("anomaly")
    target = _arrays_target(ConstantModel(value=1.0), spec, {"val": (images, masks)})
    assert segan.anomaly_split(spec, CFG, "val") == "val"
    assert segan.evaluate(target, {**CFG, "stats_images": 4}, {"msp": BUILTIN_SCORERS["msp"]}).split == "val"
