"""error_analysis: the real-eval record of a closed-set target: mIoU, per-class IoU and
Boundary IoU, the confusion matrix and the worst eval images, reported (never failed)."""

from __future__ import annotations

import math

import numpy as np

from segcheck import gate_figures
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.metrics import ConfusionMatrix, confusion_matrices, iou, miou
from segcheck.metrics.boundary import BoundaryIoU, boundary_width
from segcheck.target import Target

ABSENT = "absent"
#: how the per-class table and the per-image mIoU treat a class that is not there, as the reports state it
ABSENT_RULE = (
    "a class in neither the masks nor the predictions (of the eval set, or of one image for its own mIoU) is "
    "absent: shown as absent, never 0, and left out of every mean; a class predicted but not in the masks "
    "counts, with IoU 0"
)


def _shown(value: float):
    """A per-class number as the table shows it: the float, or ``"absent"`` for NaN."""
    return float(value) if math.isfinite(value) else ABSENT


def evaluate(target: Target, dilation_ratio: float) -> dict:
    """The counts of the shared forward pass against the eval masks, a batch at a time: the
    dataset-level confusion matrix, per-class Boundary IoU, and each image's own mIoU (NaN for
    an image without a counted pixel)."""
    data, spec = target.data, target.data.spec
    pred = target.predictions.labels
    matrix = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    boundary = BoundaryIoU(spec.num_classes, spec.ignore_index, dilation_ratio)
    per_image = np.full(len(pred), np.nan)
    accuracy = np.full(len(pred), np.nan)
    for part in data.batches():
        masks = spec.closed_set(data.masks[part])
        matrix.update(pred[part], masks)
        boundary.update(pred[part], masks)
        matrices = confusion_matrices(pred[part], masks, spec.num_classes, spec.ignore_index)
        values = iou(matrices)
        defined = np.isfinite(values).any(-1)
        with np.errstate(invalid="ignore"):
            per_image[part][defined] = np.nanmean(values[defined], axis=-1)
        totals = matrices.sum((-2, -1))
        counted = totals > 0
        accuracy[part][counted] = np.trace(matrices[counted], axis1=-2, axis2=-1) / totals[counted]
    return {"confusion": matrix.matrix, "boundary": boundary.iou(), "per_image": per_image, "accuracy": accuracy}


def error_analysis(target: Target, cfg: dict) -> GateResult:
    """Where is the model wrong? Per-class IoU and Boundary IoU, the confusion matrix, the worst images.

    **Measures**, on the shared forward pass over the eval images: the dataset-level mIoU (the
    value), per class its IoU and its Boundary IoU (Cheng et al., CVPR 2021: IoU of the bands
    within d = max(1, round(``dilation_ratio`` x image diagonal)) px inside each mask's border,
    dilation ratio 0.02 as the authors'; :mod:`segcheck.metrics.boundary`), the ground-truth
    and predicted share of the counted pixels, and the class most often predicted instead;
    the confusion matrix (rows = ground truth); each image's own mIoU, and the
    ``worst_images`` (4) images with the lowest. A class in neither the masks nor the
    predictions is *absent* (shown as absent, left out of every mean), never 0: averaging it
    in as 0 or 1 is how per-class tables disagree across tools. Every count is made a batch
    at a time; what is kept is C x C counts and one number per image.

    **Rule**: reported, never failed (noise_input, positional_prior and the other gates judge
    mIoU against what it should beat; this record says where the errors are). Boundary IoU is
    not gated: a threshold would have to depend on the image resolution, the annotation
    precision along borders and the dilation, and no value follows from the definition.

    **Why**: one mIoU hides which classes fail, whether masks are right inside but wrong at
    their borders (mIoU high, Boundary IoU low: an output stride too coarse, or upsampling),
    which classes are confused with which, and whether a few images (night, a new camera) carry
    most of the error.

    **Reading it**: a low Boundary IoU next to a fair IoU points at resolution (output stride,
    bilinear upsampling of coarse logits) or at labels drawn loosely along borders; a row of
    the confusion matrix spread over one other class is a pair the model cannot tell apart
    (or a label mapping that swaps them); worst images that share a condition show the data
    to add.
    """
    data, spec = target.data, target.data.spec
    counts = evaluate(target, cfg["dilation_ratio"])
    matrix, boundary = counts["confusion"], counts["boundary"]
    ious = iou(matrix)
    total = max(int(matrix.sum()), 1)
    rows = []
    for c, name in enumerate(spec.classes):
        others = matrix[c].copy()
        others[c] = 0
        instead = int(others.argmax())
        row_total = int(matrix[c].sum())
        rows.append(
            {
                "class": name,
                "IoU": _shown(ious[c]),
                "Boundary IoU": _shown(boundary[c]),
                "ground truth share": int(matrix[c].sum()) / total,
                "predicted share": int(matrix[:, c].sum()) / total,
                "most often predicted instead": f"{spec.classes[instead]} ({others[instead] / row_total:.1%})"
                if others[instead] > 0
                else "-",
            }
        )
    value = miou(matrix)
    boundary_miou = float(np.nanmean(boundary)) if np.isfinite(boundary).any() else float("nan")
    ranked = [i for i in np.argsort(counts["per_image"], kind="stable") if np.isfinite(counts["per_image"][i])]
    worst = [
        {"image": int(i), "mIoU": float(counts["per_image"][i]), "pixel accuracy": float(counts["accuracy"][i])}
        for i in ranked[: cfg["worst_images"]]
    ]
    absent = [r["class"] for r in rows if r["IoU"] == ABSENT]
    scored = [r for r in rows if r["IoU"] != ABSENT]
    weakest = min(scored, key=lambda r: r["IoU"]) if scored else None
    d = boundary_width(*data.images.shape[1:3], cfg["dilation_ratio"])
    message = (
        f"real mIoU {value:.3f} over {len(scored)} classes"
        + (f" ({len(absent)} absent: {', '.join(absent)})" if absent else "")
        + f", mean Boundary IoU {boundary_miou:.3f} (band {d} px = {cfg['dilation_ratio']:g} x the image diagonal)"
    )
    if weakest is not None:
        edge = weakest["Boundary IoU"]
        edge = edge if isinstance(edge, str) else f"{edge:.3f}"
        message += f"; weakest class {weakest['class']!r} IoU {weakest['IoU']:.3f}, Boundary IoU {edge}"
    if worst:
        message += f"; worst image #{worst[0]['image']} mIoU {worst[0]['mIoU']:.3f}"
    message += "; reported, not gated"
    details = {
        "miou": value,
        "boundary_miou": boundary_miou,
        "boundary_px": d,
        "dilation_ratio": cfg["dilation_ratio"],
        "per_class": rows,
        "absent_classes": absent,
        "absent_rule": ABSENT_RULE,
        "confusion": matrix.tolist(),
        "worst_images": worst,
        "images_by_miou": [[int(i), float(counts["per_image"][i])] for i in ranked],
        "images": len(data.images),
    }
    return GateResult("error_analysis", value, 0.0, True, message, rule="reported", details=details)


@hookimpl
def segcheck_register_gates(registry):
    registry.add(
        "error_analysis",
        error_analysis,
        section="error_analysis",
        needs=("labels", "finite_logits"),
        description="real mIoU, per-class IoU and Boundary IoU, the confusion matrix and the worst images (reported)",
        figures=gate_figures.error_analysis,
    )
