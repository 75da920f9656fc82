"""noise_input: a model that scores on noise does not read its images."""

from __future__ import annotations

from segcheck import gate_figures, perturb
from segcheck.evaluate import constant_class_floor
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
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
    per_kind = {}
    for kind, batches in noise_images(target, cfg["seed"]):
        per_kind[kind] = data.score(model.predict_batches(batches, len(data.images))[0])
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
    if passed:
        message = (
            f"{measured} < {threshold:.3f}: predictions depend on image content (constant-class floor {floor:.3f})"
        )
    elif floor >= cfg["max_miou"] and worst < cfg["max_ratio"] * real:  # only the unreachable absolute limit failed
        message = (
            f"{measured} >= {threshold:.3f}, but predicting {floor_class!r} everywhere already scores "
            f"{floor:.3f} on this data (constant-class floor), so the threshold cannot separate content from "
            f"prior here; set noise_input.max_miou above {worst:.2f} in segcheck.yaml"
        )
    elif worst >= cfg["max_miou"]:
        message = (
            f"{measured} >= {cfg['max_miou']:.2f}: predictions follow pixel position, not content "
            f"(constant-class floor {floor:.3f})"
        )
    else:
        message = (
            f"{measured}: noise reaches {worst / real if real else float('inf'):.0%} of the real mIoU "
            f"(limit {cfg['max_ratio']:.0%}): the model scores without reading the image"
        )
    return GateResult("noise_input", worst, threshold, passed, message, rule="value < threshold", details=details)


@hookimpl
def segcheck_register_gates(registry):
    registry.add(
        "noise_input",
        noise_input,
        section="noise_input",
        needs=("labels", "finite_logits"),
        figures=gate_figures.noise_input,
    )
