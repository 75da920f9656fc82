"""The built-in gates' figures, and the per-image grid of a target, for the HTML/Markdown reports.

Each function is a gate's ``figures`` (registry metadata): ``f(target, result, cfg) ->
list[Figure]``, called right after the gate while its target is resident. It draws from the
result's ``details`` and recomputes what pictures need from the target (the shared forward
pass, noise and corruptions drawn as the gate drew them, for the first :data:`IMAGES` eval
images), so gates stay free of plotting and the JSON report holds only figure file names.
"""

from __future__ import annotations

import numpy as np
import torch

from segcheck import perturb
from segcheck.figures import (
    ERROR_LEGEND,
    IGNORE_COLOUR,
    IMAGES,
    RIGHT_COLOUR,
    WRONG_COLOUR,
    Figure,
    changed_map,
    class_colours,
    colour_mask,
    error_map,
    grid,
    heat,
    legend,
    overlay,
    plot,
    rgb,
)


def _shown(target) -> int:
    return min(IMAGES, len(target.data.images))


def confidence(model, images: np.ndarray) -> np.ndarray:
    """The probability of the predicted class per pixel (N, H, W): softmax max, or for a binary
    model max(p, 1 - p) of its sigmoid."""
    out = []
    with torch.no_grad():
        for image in images:  # one at a time: a full-size image's softmax is large enough
            logits = model.logits(model.normalize(image[None])).float()
            if model.binary:
                p = torch.sigmoid(logits[:, 0])
                out.append(torch.maximum(p, 1 - p).cpu().numpy())
            else:
                out.append(logits.softmax(1).amax(1).cpu().numpy())
    return np.concatenate(out)


def _first(batches, k: int) -> np.ndarray:
    """The first ``k`` images of an iterable of batches (the later batches are not made)."""
    taken = []
    for batch in batches:
        taken.append(batch[: k - sum(map(len, taken))])
        if sum(map(len, taken)) >= k:
            break
    return np.concatenate(taken)


def predictions(target) -> list[Figure]:
    """input | ground truth | prediction | overlay | confidence | error for the first eval images."""
    data, model, spec = target.data, target.model, target.data.spec
    k = _shown(target)
    images, pred = data.images[:k], target.predictions.labels[:k]
    masks = data.masks[:k] if data.masks is not None else None
    conf = confidence(model, images)
    rows, labels = [], []
    for i in range(k):
        coloured = colour_mask(pred[i], spec)
        row = [images[i]]
        if masks is not None:
            row.append(colour_mask(masks[i], spec))
        row += [coloured, overlay(images[i], coloured), heat(conf[i], 0.0, 1.0)]
        label = f"eval image {i}"
        if masks is not None:
            row.append(error_map(pred[i], masks[i], spec))
            counted = spec.counted(masks[i])
            accuracy = float((pred[i] == masks[i])[counted].mean()) if counted.any() else float("nan")
            label += f"\npixel accuracy {accuracy:.3f}"
        rows.append(row)
        labels.append(label)
    headers = ["input", *(["ground truth"] if masks is not None else []), "prediction", "overlay", "confidence"]
    headers += ["error"] if masks is not None else []
    shown = [pred] + ([masks] if masks is not None else [])
    title = (
        f"{target.id}: the first {k} of {len(data.images)} eval images ({data.split!r} split), mIoU "
        f"{target.predictions.miou:.3f} over all of them"
    )
    png = grid(
        title,
        headers,
        rows,
        row_labels=labels,
        legend_entries=legend(spec, *shown) + (ERROR_LEGEND if masks is not None else []),
        ramps=[("confidence", 0.0, 1.0)],
    )
    return [Figure("predictions", "input | ground truth | prediction | overlay | confidence | error", png)]


def noise_input(target, result, cfg: dict) -> list[Figure]:
    """The predictions on each noise kind next to the real ones, and the mIoU per input kind."""
    from segcheck.noise import noise_images

    data, model, spec = target.data, target.model, target.data.spec
    k, d = _shown(target), result.details
    noise_pred = {kind: model.predict_pixels(_first(batches, k), data.batch_size)[0]
                  for kind, batches in noise_images(target, cfg["seed"])}  # fmt: skip
    pred = target.predictions.labels[:k]
    rows = [
        [data.images[i], colour_mask(data.masks[i], spec), colour_mask(pred[i], spec)]
        + [colour_mask(p[i], spec) for p in noise_pred.values()]
        for i in range(k)
    ]
    headers = ["input", "ground truth", f"prediction (mIoU {d['real_miou']:.3f})"]
    headers += [f"prediction on {kind} noise (mIoU {d['noise_miou'][kind]:.3f})" for kind in noise_pred]
    title = (
        "noise_input: what the model predicts when noise replaces the image; a prediction that keeps the "
        "scene's layout on noise follows pixel position, not content"
    )
    panels = Figure(
        "panels",
        "input | ground truth | prediction | prediction on each noise kind",
        grid(title, headers, rows, legend_entries=legend(spec, data.masks[:k], pred, *noise_pred.values())),
    )
    threshold = float(result.threshold)

    def bars(figure):
        ax = figure.add_subplot()
        names = ["real images", *d["noise_miou"], "one class\neverywhere"]
        values = [d["real_miou"], *d["noise_miou"].values(), d["constant_class_floor"]]
        colours = ["tab:blue"] + ["tab:red" if v >= threshold else "tab:orange" for v in d["noise_miou"].values()]
        ax.bar(names, values, color=colours + ["tab:gray"])
        for x, v in enumerate(values):
            ax.annotate(f"{v:.3f}", (x, v), ha="center", va="bottom", fontsize=8)
        ax.axhline(threshold, ls="--", color="black", lw=1, label=f"threshold {threshold:.3f} (noise must stay below)")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("input fed to the model")
        ax.set_ylabel("mIoU against the eval masks")
        ax.legend(loc="upper right", fontsize=8)

    return [panels, plot("miou", "mIoU on real images vs noise (and the constant-class floor)", bars)]


def perturbation_stability(target, result, cfg: dict) -> list[Figure]:
    """Clean vs corrupted input and prediction at the gated level."""
    data, model, spec = target.data, target.model, target.data.spec
    k, d = _shown(target), result.details
    corruption, severity = d["corruption"], d["severity"]
    batches = perturb.corrupted_batches(corruption, data.images, severity, cfg["seed"], data.batch_size)
    corrupted = _first(batches, k)  # drawn as the gate drew it
    clean, noisy = target.predictions.labels[:k], model.predict_pixels(corrupted, data.batch_size)[0]
    rows = [
        [
            data.images[i],
            corrupted[i],
            colour_mask(clean[i], spec),
            colour_mask(noisy[i], spec),
            changed_map(clean[i], noisy[i]),
        ]
        for i in range(k)
    ]
    labels = [f"eval image {i}\nagreement {float((clean[i] == noisy[i]).mean()):.3f}" for i in range(k)]
    headers = [
        "clean input",
        f"{corruption} {d['parameter']} ({d.get('level', perturb.level_name(severity))})",
        "clean prediction",
        "prediction on the corrupted input",
        "changed pixels",
    ]
    title = (
        f"{result.name}: agreement {result.value:.3f} with the clean prediction (min {result.threshold:.2f}), mIoU "
        f"{d['clean_miou']:.3f} -> {d['miou']:.3f}"
    )
    entries = legend(spec, clean, noisy) + [("changed", WRONG_COLOUR), ("unchanged", RIGHT_COLOUR)]
    panels = Figure(
        "panels",
        "clean | corrupted input, clean | corrupted prediction, changed pixels",
        grid(title, headers, rows, row_labels=labels, legend_entries=entries),
    )
    return [panels]


def corruption_robustness(target, result, cfg: dict) -> list[Figure]:
    """mIoU per corruption and ImageNet-C severity (and each corruption's relative robustness),
    and what severities 1-5 do to the first eval image."""
    d = result.details
    corruptions = list(d["miou"])

    def curves(figure):
        ax, bars = figure.subplots(1, 2, width_ratios=(3, 2))
        for corruption in corruptions:
            points = sorted((int(s), v) for s, v in d["miou"][corruption].items())  # str keys from JSON too
            ax.plot([0] + [s for s, _ in points], [d["clean_miou"]] + [v for _, v in points], "o-", label=corruption)
        ax.axhline(d["clean_miou"], ls=":", color="gray", lw=1, label=f"clean mIoU {d['clean_miou']:.3f}")
        ax.set_xticks(range(6), ["clean", "1", "2", "3", "4", "5"])
        ax.set_xlabel("ImageNet-C severity")
        ax.set_ylabel("mIoU on the corrupted eval images")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8, loc="lower left")
        rr = [d["relative_robustness"][c] for c in corruptions]
        bars.barh(
            corruptions, rr, color=["tab:green" if v >= 0.9 else "tab:orange" if v >= 0.7 else "tab:red" for v in rr]
        )
        for y, v in enumerate(rr):
            bars.annotate(f"{v:.2f}", (v, y), va="center", fontsize=8)
        bars.axvline(d["mrr"], ls="--", color="black", lw=1, label=f"mRR {d['mrr']:.3f}")
        bars.set_xlim(0, max(1.05, max(rr) + 0.1))
        bars.set_xlabel("relative robustness\n(mean corrupted mIoU / clean mIoU)")
        bars.invert_yaxis()
        bars.legend(fontsize=8, loc="lower left")

    figures = [
        plot("severities", "mIoU per corruption and ImageNet-C severity; relative robustness", curves, (10.4, 4))
    ]
    image = target.data.images[:1]
    rows = [[image[0]] + [perturb.corrupt(c, image, s, cfg["seed"])[0] for s in perturb.LADDER] for c in corruptions]
    headers = ["clean"] + [f"severity {s}" for s in perturb.LADDER]
    labels = [f"{c}\n{', '.join(format(v, 'g') for v in perturb.IMAGENET_C[c])}" for c in corruptions]
    title = (
        "ImageNet-C's corruptions at severities 1-5 on eval image 0 (Hendrycks & Dietterich's constants, not scaled "
        "to the image size)"
    )
    figures.append(
        Figure(
            "examples", "eval image 0 at each corruption and severity", grid(title, headers, rows, row_labels=labels)
        )
    )
    return figures


def calibration(target, result, cfg: dict) -> list[Figure]:
    """The reliability diagram: observed frequency vs mean confidence per bin, and how many
    pixels each bin holds."""
    d = result.details
    rows = d["reliability"]

    def draw(figure):
        diagram, counts = figure.subplots(2, 1, height_ratios=(3, 1), sharex=True)
        width = rows[0]["high"] - rows[0]["low"]
        full = [r for r in rows if r["pixels"]]
        centres = [(r["low"] + r["high"]) / 2 for r in full]
        diagram.bar(centres, [r["frequency"] for r in full], width=width * 0.95, color="tab:blue",
                    edgecolor="white", label=f"observed: {d['event']}")  # fmt: skip
        gaps = [r["confidence"] - r["frequency"] for r in full]
        diagram.bar(centres, gaps, bottom=[r["frequency"] for r in full], width=width * 0.95, fill=False,
                    edgecolor="tab:red", hatch="///", lw=0.8, label="gap to the mean confidence")  # fmt: skip
        diagram.plot([r["confidence"] for r in full], [r["frequency"] for r in full], "o", color="black", ms=3,
                     label="(mean confidence, observed) of a bin")  # fmt: skip
        diagram.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="perfect calibration")
        diagram.set_xlim(0, 1)
        diagram.set_ylim(0, 1.02)
        diagram.set_ylabel(d["event"])
        diagram.legend(fontsize=7, loc="upper left")
        counts.bar(centres, [r["pixels"] for r in full], width=width * 0.95, color="tab:gray")
        counts.set_yscale("log")
        counts.set_ylabel("pixels")
        counts.set_xlabel(f"{d['confidence']} ({d['bins']} equal-width bins)")

    title = f"{result.name}: reliability diagram, ECE {d['ece']:.4f} (max {result.threshold:g})"
    return [plot("reliability", title, draw, (6.4, 5.2))]


def error_analysis(target, result, cfg: dict) -> list[Figure]:
    """The normalized confusion matrix, per-class IoU and Boundary IoU, and the worst images
    (input | ground truth | prediction | error)."""
    data, spec, d = target.data, target.data.spec, result.details
    classes = list(spec.classes)
    matrix = np.asarray(d["confusion"], np.float64)
    figures = []

    def confusion(figure):
        ax = figure.add_subplot()
        totals = matrix.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(totals > 0, matrix / np.maximum(totals, 1), np.nan)
        from matplotlib import colormaps

        blues = colormaps["Blues"].with_extremes(bad="#eeeeee")  # rows of classes not in the masks: grey
        image = ax.imshow(np.ma.masked_invalid(share), vmin=0, vmax=1, cmap=blues)
        if len(classes) <= 25:
            for i in range(len(classes)):
                for j in range(len(classes)):
                    if np.isfinite(share[i, j]) and share[i, j] >= 0.005:
                        colour = "white" if share[i, j] > 0.6 else "black"
                        ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour)
        names = [f"{i} {c}" for i, c in enumerate(classes)]
        ax.set_xticks(range(len(classes)), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), names, fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("ground-truth class (grey: not in the masks)")
        figure.colorbar(image, ax=ax, label="share of the row's pixels")

    side = min(14.0, max(5.5, 0.5 * len(classes) + 2.5))
    figures.append(
        plot(
            "confusion",
            "confusion matrix, each row normalized by its ground-truth pixels",
            confusion,
            (side + 1.5, side),
        )  # fmt: skip
    )

    def per_class(figure):
        ax = figure.add_subplot()
        x = np.arange(len(classes))
        for offset, key, colour in ((-0.2, "IoU", "tab:blue"), (0.2, "Boundary IoU", "tab:orange")):
            values = [r[key] for r in d["per_class"]]
            heights = [v if not isinstance(v, str) else 0.0 for v in values]
            ax.bar(x + offset, heights, 0.4, color=colour, label=key)
            for xi, v in zip(x, values):
                if isinstance(v, str):
                    ax.annotate(v, (xi + offset, 0.02), ha="center", rotation=90, fontsize=7, color="gray")
        ax.axhline(d["miou"], ls="--", color="tab:blue", lw=1, label=f"mIoU {d['miou']:.3f}")
        ax.axhline(d["boundary_miou"], ls=":", color="tab:orange", lw=1,
                   label=f"mean Boundary IoU {d['boundary_miou']:.3f}")  # fmt: skip
        ax.set_xticks(x, [f"{i} {c}" for i, c in enumerate(classes)], rotation=45 if len(classes) > 6 else 0,
                      ha="right")  # fmt: skip
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"IoU (Boundary IoU: bands of {d['boundary_px']} px)")
        ax.legend(fontsize=8, loc="lower right")

    width = min(14.0, max(6.4, 0.5 * len(classes)))
    figures.append(plot("per_class", "per-class IoU and Boundary IoU (absent classes marked)", per_class, (width, 3.8)))
    worst = d["worst_images"]
    if worst:
        pred = target.predictions.labels
        rows, labels = [], []
        for w in worst:
            i = w["image"]
            rows.append([data.images[i], colour_mask(data.masks[i], spec), colour_mask(pred[i], spec),
                         error_map(pred[i], data.masks[i], spec)])  # fmt: skip
            labels.append(f"eval image {i}\nmIoU {w['mIoU']:.3f}\npixel accuracy {w['pixel accuracy']:.3f}")
        shown = [data.masks[w["image"]] for w in worst] + [pred[w["image"]] for w in worst]
        title = f"the {len(worst)} worst of {d['images']} eval images by their own mIoU"
        png = grid(title, ["input", "ground truth", "prediction", "error"], rows, row_labels=labels,
                   legend_entries=legend(spec, *shown) + ERROR_LEGEND)  # fmt: skip
        figures.append(Figure("worst_images", "the worst eval images: input | ground truth | prediction | error", png))
    return figures


def negative_prompt(target, result, cfg: dict) -> list[Figure]:
    """The negative pairs with the most predicted foreground: input and what the model paints."""
    data, d = target.data, result.details
    worst = sorted(d["concepts"].items(), key=lambda item: -item[1]["worst_pair"]["share"])
    rows, labels = [], []
    for concept, info in worst[:IMAGES]:
        pair = info["worst_pair"]
        image = data.images[pair["sample"] : pair["sample"] + 1]
        probs = target.model.probabilities(image, 1, [pair["prompt"]])[0]  # the gate's pass, again for one pair
        fg = probs > target.model.threshold
        painted = np.full((*fg.shape, 3), RIGHT_COLOUR, np.uint8)
        painted[fg] = WRONG_COLOUR
        rows.append([data.images[pair["sample"]], heat(probs, 0.0, 1.0), painted])
        labels.append(f"{concept}: sample {pair['sample']}\n{pair['prompt']!r}\nforeground {pair['share']:.1%}")
    title = "negative_prompt: the pair of each concept with the most foreground, though its mask is empty"
    png = grid(title, ["input (the concept is absent)", "foreground probability", "predicted foreground"], rows,
               row_labels=labels, legend_entries=[("foreground (wrong)", WRONG_COLOUR), ("background", RIGHT_COLOUR)],
               ramps=[("probability", 0.0, 1.0)])  # fmt: skip
    return [Figure("worst_pairs", "negative pairs: input | foreground probability | predicted foreground", png)]


def prediction_collapse(target, result, cfg: dict) -> list[Figure]:
    """Predicted vs true class histogram; for a binary model also the threshold sweep."""
    d, spec = result.details, target.data.spec
    figures = [class_histogram(d, spec.classes)]
    if d.get("threshold_sweep"):
        figures.append(threshold_sweep(d))
    return figures


def class_histogram(details: dict, classes) -> Figure:
    """Bars of the true and the predicted fraction of counted pixels per class."""
    colours = class_colours(len(classes))

    def bars(figure):
        ax = figure.add_subplot()
        x = np.arange(len(classes))
        truth = [details["true_fractions"][c] for c in classes]
        pred = [details["predicted_fractions"][c] for c in classes]
        ax.bar(x - 0.2, truth, 0.4, color=[rgb(c) for c in colours], edgecolor="black", label="ground truth")
        ax.bar(x + 0.2, pred, 0.4, color=[rgb(c) for c in colours], edgecolor="black", hatch="//", label="predicted")
        ax.set_xticks(
            x, [f"{i} {c}" for i, c in enumerate(classes)], rotation=45 if len(classes) > 6 else 0, ha="right"
        )
        ax.set_xlabel("class")
        ax.set_ylabel("fraction of counted pixels")
        ax.legend(fontsize=8)

    width = min(14.0, max(6.4, 0.45 * len(classes)))
    return plot("histogram", "predicted vs ground-truth class histogram", bars, size=(width, 3.8))


def threshold_sweep(details: dict) -> Figure:
    """Foreground IoU of a binary model over the probability thresholds of the sweep."""

    def curve(figure):
        ax = figure.add_subplot()
        points = sorted((float(t), v) for t, v in details["threshold_sweep"].items())  # str keys from JSON too
        thresholds, ious = [t for t, _ in points], [v for _, v in points]
        ax.plot(thresholds, ious, "o-", label="foreground IoU")
        ax.axvline(
            details["threshold"], ls="--", color="black", lw=1, label=f"model threshold {details['threshold']:g}"
        )
        if details.get("best_threshold") is not None:
            ax.axvline(
                details["best_threshold"], ls=":", color="tab:green", label=f"best {details['best_threshold']:g}"
            )
        ax.set_xlabel("probability threshold (foreground = p > threshold)")
        ax.set_ylabel("foreground IoU")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)

    return plot("threshold_sweep", "binary threshold sweep: foreground IoU per threshold", curve)


def prompted_collapse(target, result, cfg: dict) -> list[Figure]:
    """The threshold sweep of each concept (foreground IoU per threshold, canonical prompt)."""
    concepts = result.details["concepts"]

    def curves(figure):
        ax = figure.add_subplot()
        for concept, d in concepts.items():
            points = sorted((float(t), v) for t, v in d["threshold_sweep"].items())
            ax.plot([t for t, _ in points], [v for _, v in points], "o-", label=concept)
            if d.get("best_threshold") is not None:
                ax.axvline(d["best_threshold"], ls=":", color=ax.lines[-1].get_color(), lw=1)
        threshold = result.details["threshold"]
        ax.axvline(threshold, ls="--", color="black", lw=1, label=f"model threshold {threshold:g}")
        ax.set_xlabel("probability threshold (foreground = p > threshold); dotted: each concept's best")
        ax.set_ylabel("foreground IoU")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)

    return [plot("threshold_sweep", "threshold sweep per concept: foreground IoU per threshold", curves)]


def anomaly_detection(target, result, cfg: dict) -> list[Figure]:
    """The scorer's ROC and PR curves, and its score maps on anomaly-split images."""
    from segcheck.anomaly import evaluate, score_maps

    d, spec = result.details, target.data.spec
    scorer = d["scorer"]
    curves = evaluate(target, cfg).scorers[scorer].curves
    pooled, best = d["pooled"], d["best_f1"]

    def draw(figure):
        roc, pr = figure.subplots(1, 2)
        roc.plot(curves["fpr"], curves["tpr"], label=f"AUROC {pooled['auroc']:.3f}")
        roc.plot([0, 1], [0, 1], ls=":", color="gray", lw=0.8, label="chance")
        roc.axhline(pooled["tpr_level"], ls="--", color="black", lw=0.8)
        roc.plot([pooled["fpr"]], [pooled["tpr_level"]], "o", color="tab:red", label=f"FPR95 {pooled['fpr']:.3f}")
        roc.set_xlabel("false-positive rate (known pixels flagged)")
        roc.set_ylabel("true-positive rate (anomaly pixels flagged)")
        roc.set_title("ROC", fontsize=9)
        roc.legend(fontsize=8, loc="lower right")
        positives = pooled["positives"] / max(pooled["positives"] + pooled["negatives"], 1)
        pr.plot(curves["recall"], curves["precision"], label=f"AUPR {pooled['aupr']:.3f}")
        pr.axhline(positives, ls=":", color="gray", lw=0.8, label=f"chance {positives:.3f}")
        pr.plot([best["recall"]], [best["precision"]], "o", color="tab:red", label=f"best F1 {best['f1']:.3f}")
        pr.set_xlabel("recall (anomaly pixels)")
        pr.set_ylabel("precision")
        pr.set_title("precision-recall", fontsize=9)
        pr.set_xlim(0, 1)
        pr.set_ylim(0, 1.05)
        pr.legend(fontsize=8, loc="upper right")

    figures = [
        plot("curves", f"{scorer}: ROC and precision-recall over the {d['split']!r} split's pixels", draw, (9.6, 3.8))
    ]
    images, masks, maps = score_maps(target, cfg, scorer, 2)
    is_ood, valid = spec.ood_pixels(masks)
    scored = maps[valid] if valid.any() else maps.ravel()
    low, high = float(np.min(scored)), float(np.max(scored))
    threshold = best["threshold"]
    rows = []
    for i in range(len(images)):
        flagged = maps[i] >= threshold
        detection = np.full((*masks[i].shape, 3), (60, 60, 60), np.uint8)
        detection[flagged & is_ood[i]] = (30, 200, 60)
        detection[flagged & ~is_ood[i]] = WRONG_COLOUR
        detection[~flagged & is_ood[i]] = (255, 190, 0)
        detection[~valid[i]] = IGNORE_COLOUR
        rows.append([images[i], colour_mask(masks[i], spec), heat(maps[i], low, high), detection])
    headers = [
        "input",
        "ground truth (anomaly white)",
        f"{scorer} score",
        f"flagged at best-F1 threshold {threshold:.4g}",
    ]
    entries = legend(spec, masks) + [
        ("anomaly found", (30, 200, 60)),
        ("false alarm", WRONG_COLOUR),
        ("anomaly missed", (255, 190, 0)),
        ("known, not flagged", (60, 60, 60)),
    ]
    title = f"{result.name}: score heat maps on {len(images)} {d['split']!r} images (higher = more anomalous)"
    png = grid(title, headers, rows, legend_entries=entries, ramps=[(f"{scorer} score", low, high)])
    figures.append(Figure("score_maps", "input | ground truth | score heat map | flagged pixels", png))
    return figures


def overfit_tiny(target, result, cfg: dict) -> list[Figure]:
    """mIoU on the training samples per epoch, and the final per-class IoU."""
    d = result.details

    def draw(figure):
        curve, classes = figure.subplots(1, 2, width_ratios=(3, 2))
        epochs = np.arange(1, len(d["history"]) + 1)
        curve.plot(epochs, d["history"], "o-", ms=3, label="mIoU on the training samples")
        curve.axhline(cfg["min_miou"], ls="--", color="black", lw=1, label=f"min mIoU {cfg['min_miou']:.2f}")
        curve.axhline(cfg["stop_miou"], ls=":", color="gray", lw=1, label=f"stops at {cfg['stop_miou']:.2f}")
        curve.set_xlabel(f"epoch (budget {cfg['epochs']})")
        curve.set_ylabel("mIoU")
        curve.set_ylim(0, 1.05)
        curve.legend(fontsize=8, loc="lower right")
        names = list(d["per_class_iou"])
        values = [d["per_class_iou"][n] for n in names]
        colours = ["tab:red" if v < cfg["min_miou"] else "tab:green" for v in values]
        classes.barh(names, values, color=colours)
        classes.axvline(cfg["min_miou"], ls="--", color="black", lw=1)
        classes.set_xlim(0, 1)
        classes.set_xlabel("IoU after the last epoch")
        classes.set_ylabel("class")
        classes.invert_yaxis()

    return [
        plot(
            "history", f"overfit_tiny: mIoU on its {cfg['samples']} training images after each epoch", draw, (9.6, 3.8)
        )
    ]


def positional_prior(target, result, cfg: dict) -> list[Figure]:
    """The per-position majority class of the training masks, beside an eval mask and its prediction."""
    from segcheck.layout import prior_map

    data, spec, d = target.data, target.data.spec, result.details
    prior, used = prior_map(target, cfg)
    pred = target.predictions.labels[0]
    row = [colour_mask(prior, spec), data.images[0], colour_mask(data.masks[0], spec), colour_mask(pred, spec)]
    headers = [
        f"prior map: majority class per pixel of {used} train masks (mIoU {d['prior_miou']:.3f})",
        "eval image 0",
        "its ground truth",
        f"its prediction (mIoU of all {d['real_miou']:.3f})",
    ]
    title = (
        f"positional_prior: what knowing only where classes usually are gives; the model must beat it by "
        f"{d['margin']:.2f}"
    )
    png = grid(title, headers, [row], legend_entries=legend(spec, prior, data.masks[0], pred))
    return [Figure("prior_map", "the positional prior map beside an eval image", png)]


def _fitted(panel: np.ndarray, shape: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """``panel`` (H, W, 3) uint8 resized to ``shape`` (H, W) for a grid of one panel size."""
    if panel.shape[:2] == tuple(shape):
        return panel
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(panel)).resize(
        (shape[1], shape[0]), Image.NEAREST if nearest else Image.BILINEAR
    )
    return np.asarray(image)


def _expanded(grid: np.ndarray, stride: int, shape: tuple[int, int]) -> np.ndarray:
    """A map on the grid of every ``stride``-th pixel (sampled at ``stride // 2``) spread over the
    ``stride x stride`` blocks it stands for, at ``shape`` (H, W)."""
    full = np.repeat(np.repeat(grid, stride, 0), stride, 1)[: shape[0], : shape[1]]
    return np.pad(full, ((0, shape[0] - full.shape[0]), (0, shape[1] - full.shape[1])), mode="edge")


#: flagged pixels (label_quality): magenta, a colour no class of the palette's first 18 has
FLAGGED_COLOUR = (255, 0, 255)


def flagged_map(image: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """``image`` in faded grey with ``flags`` (H, W) in :data:`FLAGGED_COLOUR`: where labels are suspect."""
    grey = image.astype(np.float32).mean(-1, keepdims=True) * 0.5 + 96
    out = np.repeat(grey, 3, -1).astype(np.uint8)
    out[flags] = FLAGGED_COLOUR
    return out


def label_quality(target, found: list) -> list[Figure]:
    """Per judged split, its worst images (largest flagged share first): input | mask | flagged
    pixels | prediction; ``found`` is the gate's ``Judged`` of each split."""
    data, model, spec = target.data, target.model, target.data.spec
    figures = []
    for split in found:
        shown = [i for i in split.ranked() if i in split.grids][: IMAGES + 1]
        if not shown:
            continue
        rows, labels, maps = [], [], []
        dataset = None if split.split == data.split else data.dataset(split.split)
        for i in shown:
            index = split.indices[i]
            if dataset is None:
                image, mask, pred = data.images[index], data.masks[index], target.predictions.labels[index]
            else:
                image, mask = (np.asarray(a) for a in dataset[index])
                pred = model.predict_pixels(image[None], 1)[0][0]
            flags = _expanded(split.grids[i], split.strides[i], mask.shape)
            shape = rows[0][0].shape[:2] if rows else image.shape[:2]
            rows.append(
                [
                    _fitted(image, shape),
                    _fitted(colour_mask(mask, spec), shape, True),
                    _fitted(flagged_map(image, flags), shape, True),
                    _fitted(colour_mask(pred, spec), shape, True),
                ]
            )
            maps += [mask, pred]
            share = split.flagged[i] / max(split.judged[i], 1)
            labels.append(f"{split.names[i]}\n{share:.1%} flagged")
        title = (
            f"label_quality: the {len(shown)} {split.split!r} images with the largest share of labels the model's "
            "probabilities contradict (confident learning); magenta: flagged pixels, likely mislabelled"
        )
        png = grid(
            title,
            ["input", "mask", "flagged pixels", "prediction"],
            rows,
            row_labels=labels,
            legend_entries=legend(spec, *maps) + [("flagged: likely mislabelled", FLAGGED_COLOUR)],
        )
        what = f"{split.split}: input | mask | flagged pixels | prediction"
        figures.append(Figure(f"worst_{split.split}", what, png))
    return figures


def _split_image(data, split: str, index: int) -> np.ndarray:
    """Image ``index`` of ``split`` (the eval sample's own, without splits to read)."""
    if data.splits is None:
        return data.images[index]
    return np.asarray(data.dataset(split)[index][0])


def split_leakage(target, result, scans: dict) -> list[Figure]:
    """The near-duplicate pairs side by side, closest first (with none, the closest pairs of the
    evaluated split and the others, to show how far apart they are); ``scans``: the split scan."""
    from segcheck.splits import HASH_BITS, distances

    data, d = target.data, result.details
    pairs = [(p["split_a"], p["index_a"], p["split_b"], p["index_b"], p["distance"]) for p in d["pairs"]]
    leaked = bool(pairs)
    if not pairs:
        mine = scans[d["split"]]
        for other in (s for s in d["images"] if s != d["split"]):
            dist = distances(mine.hashes, scans[other].hashes)
            for flat in np.argsort(dist, axis=None, kind="stable")[: IMAGES + 1]:
                i, j = np.unravel_index(flat, dist.shape)
                pairs.append((d["split"], int(i), other, int(j), float(dist[i, j]) / HASH_BITS))
        pairs.sort(key=lambda p: p[4])
    rows, labels = [], []
    for split_a, i, split_b, j, distance in pairs[: IMAGES + 1]:
        a, b = _split_image(data, split_a, i), _split_image(data, split_b, j)
        shape = rows[0][0].shape[:2] if rows else a.shape[:2]
        a, b = _fitted(a, shape), _fitted(b, shape)
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(-1)
        rows.append([a, b, heat(diff, 0.0, 64.0)])
        labels.append(f"{scans[split_a].names[i]}\n~ {scans[split_b].names[j]}\ndistance {distance:.3f}")
    what = "near-duplicates" if leaked else "the closest pairs (none is a near-duplicate)"
    title = (
        f"split_leakage: {what} between {d['split']!r} and the other splits, by perceptual-hash distance (share of "
        f"{HASH_BITS} bits; near-duplicate: <= {d['max_distance']:.2f})"
    )
    twin = "its near-duplicate" if leaked else "the closest image of the other split"
    png = grid(
        title, ["image", f"{twin} (fitted to the same size)", "difference (grey levels)"], rows,
        row_labels=labels, ramps=[("difference", 0.0, 64.0)],
    )  # fmt: skip
    return [Figure("pairs", f"split_leakage: {what}, side by side", png)]


def split_shift(target, result, scans: dict) -> list[Figure]:
    """Per-class pixel shares per split (bars side by side) and each split's brightness histogram."""
    d, classes = result.details, target.data.spec.classes
    shares = d["class_shares"]

    def draw(figure):
        bars, hist = figure.subplots(1, 2, width_ratios=[3, 1])
        width = 0.8 / max(len(shares), 1)
        x = np.arange(len(classes))
        for k, (split, values) in enumerate(shares.items()):
            bars.bar(x + k * width, [values[c] for c in classes], width, label=split)
        bars.set_xticks(x + width * (len(shares) - 1) / 2, classes, rotation=45, ha="right", fontsize=8)
        bars.set_ylabel("share of the split's labelled pixels")
        bars.legend(fontsize=8)
        bars.set_title(f"class shares (divergence train vs {d['split']!r}: {result.value:.4f})", fontsize=9)
        for split, found in scans.items():
            if found.same_as is None and len(found.brightness):
                hist.hist(found.brightness, bins=16, range=(0, 255), density=True, histtype="step", label=split)
        hist.set_xlabel("image brightness (mean grey level)")
        hist.set_title("brightness per split", fontsize=9)
        hist.legend(fontsize=8)

    size = (max(8.0, 0.45 * len(classes) * max(len(shares), 1) + 3), 4.0)
    return [plot("class_shares", "split_shift: class shares per split, and brightness", draw, size)]


__all__ = [
    "anomaly_detection",
    "split_leakage",
    "split_shift",
    "label_quality",
    "calibration",
    "corruption_robustness",
    "error_analysis",
    "negative_prompt",
    "noise_input",
    "overfit_tiny",
    "perturbation_stability",
    "positional_prior",
    "prediction_collapse",
    "predictions",
]
