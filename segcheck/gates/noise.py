"""noise_input: a model that scores on noise does not read its images."""

from __future__ import annotations

import numpy as np

from segcheck import gate_figures, perturb
from segcheck.data import DatasetSpec
from segcheck.evaluate import constant_class_floor
from segcheck.gates import diagnosis
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.layout import PositionCounts
from segcheck.noise import noise_images
from segcheck.target import Target


def noise_input(target: Target, cfg: dict) -> GateResult:
    """Feed each noise kind instead of the eval images and score it against the real labels.

    Passes when the worst kind's mIoU is < ``cfg["max_miou"]`` and < ``cfg["max_ratio"]``
    x the real mIoU. A failure is put down to the threshold, not the model, only when the
    constant-class floor reaches ``max_miou`` and the ratio rule holds (the model scores far
    better on images than on noise).
    """
    data, model = target.data, target.model
    real = target.predictions.miou
    per_kind, worst_labels = {}, None
    for kind, batches in noise_images(target, cfg["seed"]):
        labels = model.predict_batches(batches, len(data.images))[0]
        per_kind[kind] = data.score(labels)
        if per_kind[kind] >= max(per_kind.values()):
            worst_labels = labels  # the worst kind's predictions: whether they form a layout
        del labels
    stats = target.model.memo(
        "channel statistics", data, lambda: perturb.channel_statistics(data.images, data.batch_size)
    )
    worst_kind = max(per_kind, key=per_kind.get)
    worst = per_kind[worst_kind]
    threshold = min(cfg["max_miou"], cfg["max_ratio"] * real)
    floor, floor_class = constant_class_floor(data.class_counts, data.spec.classes)
    passed = bool(worst < threshold)
    details = {
        "real_miou": real,
        "noise_miou": per_kind,
        "worst_kind": worst_kind,
        "constant_class_floor": floor,
        "floor_class": floor_class,
        "data_mean": stats["data_mean"].tolist(),
        "data_std": stats["data_std"].tolist(),
    }
    measured = f"noise mIoU {worst:.3f} ({worst_kind}) vs real {real:.3f}"
    layout, majority = layout_agreement(worst_labels, data.spec.num_classes)
    details["noise_layout_agreement"] = layout
    constant = np.unique(majority) if majority is not None else np.array([])
    constant_class = data.spec.classes[int(constant[0])] if len(constant) == 1 else None
    explained = None if passed else diagnosis.state(target)
    if passed:
        message = (
            f"{measured} < {threshold:.3f}: predictions depend on image content (constant-class floor {floor:.3f})"
        )
    elif explained:
        message = f"{measured} >= {threshold:.3g}: {explained}"
    elif floor >= cfg["max_miou"] and worst < cfg["max_ratio"] * real:  # only the unreachable absolute limit failed
        message = (
            f"{measured} >= {threshold:.3g}, but predicting {floor_class!r} everywhere already scores "
            f"{floor:.3f} on this data (constant-class floor), so the threshold cannot separate content from "
            f"prior here; set noise_input.max_miou above {worst:.2f} in segcheck.yaml"
        )
    elif real <= floor + FLOOR_MARGIN:
        message = (
            f"{measured} >= {threshold:.3g}: on real images the model does not beat predicting {floor_class!r} "
            f"everywhere ({floor:.3f}, the constant-class floor), so noise scores like real images: it does not "
            "segment these data yet (untrained, the wrong checkpoint or normalization); see prediction_collapse"
        )
    elif layout >= LAYOUT_AGREEMENT and constant_class is not None:  # one class on noise is no layout
        message = (
            f"{measured} >= {threshold:.3g}: on noise it predicts {constant_class!r} everywhere, which scores about "
            f"the constant-class floor ({floor:.3f}); on real images it beats that floor by {real - floor:.3f} only: "
            "it barely segments these data yet (see prediction_collapse)"
        )
    elif layout >= LAYOUT_AGREEMENT:
        message = (
            f"{measured} >= {threshold:.3g}: on noise it predicts the same layout whatever the noise ({layout:.0%} "
            "of pixels agree between noise images): predictions follow pixel position, not content"
        )
    elif worst >= cfg["max_miou"]:  # above the absolute limit: noise alone scores, as the scene's layout does
        message = (
            f"{measured} >= {cfg['max_miou']:.3g}: predictions follow pixel position, not content (on noise "
            f"{layout:.0%} of pixels agree between noise images; constant-class floor {floor:.3f})"
        )
    else:
        share = f"{worst / real:.0%} of the real mIoU" if real > 0 else "more than the real mIoU (0)"
        message = (
            f"{measured}: noise reaches {share} (limit {cfg['max_ratio']:.0%}): the model scores about as well "
            "without reading the image (it predicts the data's frequent classes on any input)"
        )
    return GateResult("noise_input", worst, threshold, passed, message, rule="value < threshold", details=details)


#: real mIoU within this of the constant-class floor: the model does not segment at all
FLOOR_MARGIN = 0.05
#: predictions on noise that agree this much from one noise image to the next form a layout
LAYOUT_AGREEMENT = 0.8


def layout_agreement(labels, num_classes: int) -> tuple[float, np.ndarray | None]:
    """How alike the label maps (N, H, W) predicted on different noise images are, and their
    per-position majority map: the share of pixels that agree with that map (1: one fixed map;
    near the largest class's share: no layout). ``(0.0, None)`` without labels."""
    if labels is None or not labels.size:
        return 0.0, None
    counts = PositionCounts(DatasetSpec(tuple(map(str, range(max(num_classes, 2))))), labels.shape[1:3], len(labels))
    for label_map in labels:
        counts.add(label_map)
    majority = counts.majority()
    return float(sum(int(np.count_nonzero(m == majority)) for m in labels) / labels.size), majority


@hookimpl
def segcheck_register_gates(registry):
    registry.add(
        "noise_input",
        noise_input,
        section="noise_input",
        needs=("labels", "finite_logits"),
        figures=gate_figures.noise_input,
    )
