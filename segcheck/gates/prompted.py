"""Gates of text-prompted binary models (suite ``prompted``), per concept and per prompt.

Every number is a foreground metric pooled over the eval samples of one concept (the pixels
of all its (image, concept) pairs, ``ignore_index`` out), never a background+foreground mIoU:
with a few percent of foreground, "background everywhere" scores 0.49 mIoU and 95% pixel
accuracy, and foreground IoU 0. The model is asked with each concept's canonical prompt
(the first) unless a gate says otherwise; each set of prompts is one shared forward pass.
"""

from __future__ import annotations

import numpy as np

from segcheck import SegcheckError, gate_figures
from segcheck.gates.collapse import SWEEP
from segcheck.gates.registered import NotApplicable
from segcheck.gates.result import GateResult
from segcheck.hookspecs import hookimpl
from segcheck.noise import noise_images
from segcheck.target import Target

NEEDS = ("labels", "prompts")


def probabilities(target: Target, prompts: list[str], images=None, key: str = "") -> np.ndarray:
    """Foreground probabilities (N, H, W) of the model asked with ``prompts`` (one per sample)
    on the eval images (or ``images``, an array or an iterable of batches, named by ``key``),
    computed once per run and weights; non-finite probabilities are an error (the gate cannot
    judge them)."""
    data, model = target.data, target.model
    pixels = data.images if images is None else images

    def forward() -> np.ndarray:
        probs = model.probabilities(pixels, data.batch_size, prompts)
        if not np.isfinite(probs).all():
            raise SegcheckError(
                "the model's logits are not finite (NaN/inf) when asked with these prompts; no prompted gate "
                "can judge it (check the checkpoint and the input normalization)"
            )
        return probs

    return model.memo(f"prompted:{key}:{tuple(prompts)!r}", data, forward)


def confusion(pred: np.ndarray, masks: np.ndarray, spec) -> dict[str, int]:
    """Foreground true/false positives/negatives of boolean ``pred`` vs 0/1 ``masks`` over the
    pixels ``spec`` counts; any other counted label is an error."""
    keep = spec.counted(masks)
    wrong = keep & (masks != 0) & (masks != 1)
    if wrong.any():
        values = sorted(set(np.unique(masks[wrong]).tolist()))[:10]
        raise SegcheckError(
            f"prompted masks hold labels {values}; expected 0 (background), 1 (foreground) or ignore_index "
            f"{spec.ignore_index}: check the dataset's mask_values"
        )
    truth, pred = masks[keep] == 1, pred[keep]
    tp, fp = int((pred & truth).sum()), int((pred & ~truth).sum())
    fn, tn = int((~pred & truth).sum()), int((~pred & ~truth).sum())
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def scores(c: dict[str, int]) -> dict[str, float]:
    """Foreground IoU, Dice, precision and recall, and pixel accuracy of confusion ``c`` (NaN
    where undefined: no foreground predicted nor true)."""
    ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731
    return {
        "iou": ratio(c["tp"], c["tp"] + c["fp"] + c["fn"]),
        "dice": ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"]),
        "precision": ratio(c["tp"], c["tp"] + c["fp"]),
        "recall": ratio(c["tp"], c["tp"] + c["fn"]),
        "pixel_accuracy": ratio(c["tp"] + c["tn"], sum(c.values())),
        "true_fraction": ratio(c["tp"] + c["fn"], sum(c.values())),
        "predicted_fraction": ratio(c["tp"] + c["fp"], sum(c.values())),
    }


def by_concept(target: Target) -> dict[str, np.ndarray]:
    """Indices of the eval samples of each concept present in the eval sample (sorted)."""
    concepts = np.array(target.data.concepts)
    return {c: np.flatnonzero(concepts == c) for c in target.data.spec.concepts if (concepts == c).any()}


def concept_scores(target: Target, probs: np.ndarray, threshold: float | None = None) -> dict[str, dict]:
    """Per concept: the foreground scores of ``probs > threshold`` (the model's) on its samples."""
    t = target.model.threshold if threshold is None else threshold
    masks, spec = target.data.masks, target.data.spec
    return {c: scores(confusion(probs[i] > t, masks[i], spec)) for c, i in by_concept(target).items()}


def unjudged(target: Target) -> list[str]:
    """The declared concepts that have no sample in the eval sample (nothing judges them)."""
    return [c for c in target.data.spec.concepts if c not in by_concept(target)]


def _note_unjudged(target: Target) -> str:
    missing = unjudged(target)
    return f"; not in the eval sample, so not judged: {', '.join(missing)} (raise eval.size)" if missing else ""


def fmt(value: float) -> str:
    return "nan" if not np.isfinite(value) else f"{value:.3f}"


def _worst(values: dict[str, float]) -> tuple[str, float]:
    """The key of the lowest value (NaN counts as lowest: nothing was measured there)."""
    key = min(values, key=lambda k: values[k] if np.isfinite(values[k]) else -np.inf)
    return key, values[key]


def prompt_metrics(target: Target, cfg: dict) -> GateResult:
    """Foreground IoU, Dice, pixel accuracy, precision and recall per concept and prompt.

    Passes when every concept's foreground IoU with its canonical prompt is >= ``min_iou``;
    the paraphrases' numbers are reported beside it (paraphrase_consistency judges them).
    """
    data = target.data
    table, canonical = {}, {}
    for choice in range(max(len(data.spec.prompts_of(c)) for c in data.spec.concepts)):
        prompts = data.prompts(choice)
        per = concept_scores(target, probabilities(target, prompts))
        for concept in per:
            asked = data.spec.prompts_of(concept)
            if choice < len(asked):
                table.setdefault(concept, {})[asked[choice]] = per[concept]
                if choice == 0:
                    canonical[concept] = per[concept]["iou"]
    judged = {c: v for c, v in canonical.items() if np.isfinite(v)}
    if not judged:
        raise NotApplicable("no concept has foreground in its masks or its predictions; foreground IoU is undefined")
    worst, value = _worst(judged)
    listed = "; ".join(
        f"{c} IoU {fmt(s[data.spec.prompts_of(c)[0]]['iou'])} Dice {fmt(s[data.spec.prompts_of(c)[0]]['dice'])} "
        f"pixel accuracy {fmt(s[data.spec.prompts_of(c)[0]]['pixel_accuracy'])}"
        for c, s in table.items()
    )
    passed = bool(np.isfinite(value) and value >= cfg["min_iou"])
    message = f"foreground per concept (canonical prompt): {listed}" + _note_unjudged(target)
    if not passed:
        acc = table[worst][data.spec.prompts_of(worst)[0]]["pixel_accuracy"]
        message += (
            f": {worst!r} foreground IoU {fmt(value)} < {cfg['min_iou']:.2f} while pixel accuracy is {fmt(acc)}: "
            "accuracy counts the background; see prompted_collapse for the threshold sweep"
        )
    return GateResult(
        "prompt_metrics",
        value,
        cfg["min_iou"],
        passed,
        message,
        rule="value >= threshold",
        details={
            "per_prompt": table,
            "canonical": {c: data.spec.prompts_of(c)[0] for c in table},
            "worst_concept": worst,
            "not_judged": unjudged(target),
        },
    )


def prompted_collapse(target: Target, cfg: dict) -> GateResult:
    """Does the model predict foreground where the masks have it, per concept?

    For each concept (canonical prompt): the probability range, the predicted and true
    foreground fractions at the model's threshold, and a threshold sweep 0.1..0.9 (foreground
    IoU; the best threshold reported). Passes when every concept with foreground in its masks
    has predicted fraction >= ``min_positive_ratio`` x true fraction.
    """
    data, model = target.data, target.model
    probs = probabilities(target, data.prompts())
    concepts, ratios, problems, under = {}, {}, [], []
    for concept, idx in by_concept(target).items():
        at = concept_scores(target, probs)[concept]
        sweep = {t: concept_scores(target, probs, t)[concept]["iou"] for t in SWEEP}
        finite = {t: v for t, v in sweep.items() if np.isfinite(v)}
        best = max(finite, key=finite.get) if finite else None
        if best is not None and np.isfinite(at["iou"]) and at["iou"] >= finite[best]:
            best = model.threshold  # the model's threshold is as good as any in the sweep
        low, high = float(probs[idx].min()), float(probs[idx].max())
        concepts[concept] = {
            "probability_range": [low, high],
            "true_fraction": at["true_fraction"],
            "predicted_fraction": at["predicted_fraction"],
            "threshold_iou": at["iou"],
            "threshold_sweep": sweep,
            "best_threshold": best,
            "best_iou": finite.get(best, at["iou"]) if best is not None else float("nan"),
        }
        if at["true_fraction"] > 0:
            ratios[concept] = at["predicted_fraction"] / at["true_fraction"]
            if ratios[concept] < cfg["min_positive_ratio"]:
                under.append(concept)
                hint = (
                    f"the sweep's best threshold is {best:g} (IoU {finite[best]:.3f} vs {fmt(at['iou'])} at "
                    f"{model.threshold:g})"
                    if best is not None and finite[best] > 0
                    else "no threshold of the sweep finds the foreground"
                )
                problems.append(
                    f"{concept!r}: foreground predicted on {at['predicted_fraction']:.2%} of pixels vs "
                    f"{at['true_fraction']:.2%} true (ratio {ratios[concept]:.2f}), probabilities "
                    f"{low:.3f}..{high:.3f}; {hint}"
                )
            elif ratios[concept] > cfg["max_positive_ratio"]:
                problems.append(
                    f"{concept!r}: foreground predicted on {at['predicted_fraction']:.2%} of pixels vs "
                    f"{at['true_fraction']:.2%} true (ratio {ratios[concept]:.2f} > {cfg['max_positive_ratio']:g}): "
                    "foreground everywhere it is unsure"
                )
    if not ratios:
        raise NotApplicable("no concept of the eval sample has foreground in its masks; nothing can collapse")
    worst, value = _worst(ratios)
    measured = "; ".join(
        f"{c}: predicted {d['predicted_fraction']:.2%} vs true {d['true_fraction']:.2%}, probabilities "
        f"{d['probability_range'][0]:.3f}..{d['probability_range'][1]:.3f}, best threshold "
        f"{'-' if d['best_threshold'] is None else format(d['best_threshold'], 'g')} (IoU {fmt(d['best_iou'])})"
        for c, d in concepts.items()
    )
    measured += _note_unjudged(target)
    message = measured if not problems else (
        f"collapse to {'background' if under else 'foreground'} at threshold "
        f"{model.threshold:g}: {'; '.join(problems)}: the loss lets one class win where the model is unsure "
        "(class imbalance: weigh the positives, add Dice; or weighted too hard) or the threshold is wrong"
    )  # fmt: skip
    return GateResult(
        "prompted_collapse",
        value,
        cfg["min_positive_ratio"],
        not problems,
        message,
        rule=f"value >= threshold (predicted / true foreground, worst concept), each <= {cfg['max_positive_ratio']:g}",
        details={"concepts": concepts, "threshold": model.threshold, "worst_concept": worst},
    )


def prompted_noise_input(target: Target, cfg: dict) -> GateResult:
    """Noise instead of the eval images, asked with each sample's canonical prompt, scored
    against the real masks: the worst (noise kind, concept) foreground IoU must be <
    ``max_iou`` and < ``max_ratio`` x that concept's real foreground IoU."""
    data = target.data
    prompts = data.prompts()
    real = {c: s["iou"] for c, s in concept_scores(target, probabilities(target, prompts)).items()}
    kinds = {}
    for kind, images in noise_images(target, cfg["seed"]):
        kinds[kind] = {
            c: s["iou"] for c, s in concept_scores(target, probabilities(target, prompts, images, kind)).items()
        }
    finite = [(v, k, c) for k, per in kinds.items() for c, v in per.items() if np.isfinite(v) and np.isfinite(real[c])]
    if not finite:
        raise NotApplicable("no concept has a defined foreground IoU on real and noise images; nothing to compare")
    value, kind, concept = max(finite)
    bad = [f"{k}/{c} {v:.3f}" for v, k, c in finite if v >= cfg["max_iou"] or not v < cfg["max_ratio"] * real[c]]
    passed = not bad
    measured = f"worst noise foreground IoU {value:.3f} ({kind}, {concept}) vs real " + ", ".join(
        f"{c} {fmt(v)}" for c, v in real.items()
    )
    message = measured if passed else (
        f"{measured}: {', '.join(bad)} not < {cfg['max_iou']:.2f} and < {cfg['max_ratio']:.1f} x real: the "
        "model answers the prompt without reading the image (a prior on where the concept lies), or it scores "
        "nothing on real images either"
    )  # fmt: skip
    return GateResult(
        "prompted_noise_input",
        value,
        cfg["max_iou"],
        passed,
        message,
        rule=f"value < threshold and < {cfg['max_ratio']} x real IoU",
        details={
            "noise_iou": kinds,
            "real_iou": real,
            # what "foreground everywhere" scores: the true foreground fraction of each concept
            "all_foreground_iou": {
                c: s["true_fraction"] for c, s in concept_scores(target, np.ones_like(data.masks, float)).items()
            },
        },
    )


def prompt_gaps(target: Target) -> tuple[dict, dict, dict]:
    """``(own, other, gaps)`` per concept with foreground in the eval sample: IoU with its own
    canonical prompt, IoU (against the same masks) asked with each other concept's canonical
    prompt, and own minus the best other (NaN counted as 0). NotApplicable with one concept, or
    none with foreground."""
    data = target.data
    if len(data.spec.concepts) < 2:
        raise NotApplicable("prompt_sensitivity asks with another concept's prompt; this dataset has one concept")
    own_scores = concept_scores(target, probabilities(target, data.prompts()))
    present = [c for c in by_concept(target) if own_scores[c]["true_fraction"] > 0]
    if not present:
        raise NotApplicable("no concept of the eval sample has foreground in its masks; nothing to tell apart")
    own = {c: own_scores[c]["iou"] for c in present}
    other: dict[str, dict[str, float]] = {}
    for asked in data.spec.concepts:
        per = concept_scores(target, probabilities(target, data.prompts(data.spec.prompts_of(asked)[0])))
        for concept in present:
            if concept != asked:
                other.setdefault(concept, {})[asked] = per[concept]["iou"]
    gaps = {
        c: (own[c] if np.isfinite(own[c]) else 0.0) - max((v if np.isfinite(v) else 0.0) for v in other[c].values())
        for c in present
    }
    return own, other, gaps


def prompt_sensitivity(target: Target, cfg: dict) -> GateResult:
    """Does the prompt matter? For each concept: foreground IoU with its own canonical prompt
    minus the highest IoU (against the same masks) when asked with another concept's canonical
    prompt (:func:`prompt_gaps`); passes when the smallest gap is >= ``min_gap``."""
    own, other, gaps = prompt_gaps(target)
    worst, value = _worst(gaps)
    passed = value >= cfg["min_gap"]
    listed = "; ".join(
        f"{c}: own prompt IoU {fmt(own[c])}, others' best {fmt(max(other[c].values()))} (gap {gaps[c]:.3f})"
        for c in gaps
    )
    message = listed if passed else (
        f"{listed}: {worst!r} gap {value:.3f} < {cfg['min_gap']:.2f}: the model gives about the same mask whatever "
        "it is asked (it ignores its prompt; or the concepts' masks coincide)"
    )  # fmt: skip
    return GateResult(
        "prompt_sensitivity",
        value,
        cfg["min_gap"],
        passed,
        message,
        rule="value >= threshold",
        details={"own_iou": own, "other_prompt_iou": other, "gaps": gaps},
    )


def paraphrase_consistency(target: Target, cfg: dict) -> GateResult:
    """Do paraphrases of one concept give the same mask? For each concept with several
    prompts: IoU between the foreground predicted with the canonical prompt and with each
    paraphrase, pooled over its samples; passes when the lowest is >= ``min_iou``. Not
    applicable when another concept's prompt gives about the same mask (a smallest
    :func:`prompt_gaps` gap < ``min_prompt_gap``): a model that ignores its prompt agrees with
    itself trivially, and prompt_sensitivity judges it."""
    data = target.data
    canonical = probabilities(target, data.prompts()) > target.model.threshold
    pairs, empty = {}, []
    for concept, idx in by_concept(target).items():
        asked = data.spec.prompts_of(concept)
        for k in range(1, len(asked)):
            para = probabilities(target, data.prompts(k)) > target.model.threshold
            keep = data.spec.counted(data.masks[idx])
            a, b = canonical[idx] & keep, para[idx] & keep
            if a.sum() == keep.sum():  # foreground everywhere: agreement would be trivial
                empty.append(f"{asked[0]!r} (foreground everywhere)")
                continue
            union = int((a | b).sum())
            if union == 0:
                empty.append(f"{asked[0]!r}/{asked[k]!r}")
                continue
            pairs[f"{asked[0]} | {asked[k]}"] = int((a & b).sum()) / union
    if not pairs:
        reason = "no concept has two prompts" if not empty else f"no varied prediction for {', '.join(empty)}"
        raise NotApplicable(f"paraphrase_consistency has nothing to compare: {reason} (see prompted_collapse)")
    worst, value = _worst(pairs)
    passed = value >= cfg["min_iou"]
    ignored = _prompt_ignored(target, cfg["min_prompt_gap"]) if passed else None  # a disagreement is a verdict
    if ignored:
        raise NotApplicable(ignored)
    listed = ", ".join(f"{p}: {v:.3f}" for p, v in pairs.items())
    message = f"IoU between paraphrases' masks: {listed}" + (
        "" if passed else f": {worst!r} {value:.3f} < {cfg['min_iou']:.2f}: the model reads the words, not the concept"
    )
    return GateResult(
        "paraphrase_consistency",
        value,
        cfg["min_iou"],
        passed,
        message,
        rule="value >= threshold",
        details={"pairs": pairs, "no_foreground": empty},
    )


def _prompt_ignored(target: Target, min_gap: float) -> str | None:
    """Why paraphrases' agreement says nothing when the prompt barely matters (every concept's
    gap to another concept's prompt < ``min_gap``: the same mask whatever is asked), else None."""
    try:
        _, _, gaps = prompt_gaps(target)
    except NotApplicable:  # one concept, or none with foreground: nothing says the prompt is ignored
        return None
    finite = {c: g for c, g in gaps.items() if np.isfinite(g)}
    if not finite or max(finite.values()) >= min_gap:
        return None
    largest = max(finite.values())
    return (
        f"the model gives about the same mask whatever it is asked (every concept's gap to another concept's prompt "
        f"is < {min_gap:.2f}, the largest {largest:.3f}), so its paraphrases agree trivially; prompt_sensitivity "
        "judges this"
    )


def negative_pairs(target: Target) -> dict[str, np.ndarray]:
    """Per concept: the eval samples whose mask holds no foreground among its counted pixels
    (and some counted pixel): (image, concept) pairs where the concept is absent."""
    data, spec = target.data, target.data.spec
    out = {}
    for concept, idx in by_concept(target).items():
        empty = []
        for i in idx:
            keep = spec.counted(data.masks[i])
            if keep.any() and not (data.masks[i][keep] == 1).any():
                empty.append(i)
        if empty:
            out[concept] = np.array(empty)
    return out


def negative_prompt(target: Target, cfg: dict) -> GateResult:
    """Does the model answer "not here" when the concept is absent? Foreground on negative pairs.

    **Measures**, for every (image, concept) sample whose mask is empty (the concept is not in
    that image: the masks hold no foreground among their counted pixels), the share of its
    counted pixels the model calls foreground (probability > its threshold) when asked with
    each of that concept's prompts (canonical and paraphrases); per concept, the mean over its
    empty pairs and its prompts. The value is the highest concept's mean share.

    **Rule**: passes when that share <= ``max_share`` (default 0.01: one pixel in a hundred,
    on average, claimed for a concept that is not there. Thin concepts such as cracks cover a
    few percent of an image where they are present, so a model above 1% paints a substantial
    part of a typical object into images that have none). Without an empty pair in the eval
    sample the gate is a SKIP: ``synthetic-drywall`` has images without a crack or a seam;
    in ``prompted-folder`` an all-background mask file (``masks/<id>__<concept>.png`` of 0s)
    marks an image annotated as not showing the concept.

    **Why**: the users of text-prompted models report it first (CLIPSeg "Object Not Present",
    timojl/clipseg#37; SAM 3's SA-Co benchmark scores negative image-phrase pairs): a model
    trained only on images that contain the object learns to always find one, and foreground
    IoU never sees it, because on an empty mask it is undefined or averaged away.

    **A failure** usually means the training data had no negative pairs, or the model reads the
    prompt as "which object" but not "whether": it predicts the concept's usual place or the
    other concepts' objects whatever the image shows.

    **Fixes**: train with negative pairs (images without the concept, empty masks) and a loss
    that rewards an empty answer (BCE; Dice alone is undefined there), or add an image-level
    presence head and gate the mask by it.
    """
    data, spec = target.data, target.data.spec
    pairs = negative_pairs(target)
    if not pairs:
        raise NotApplicable(
            "no (image, concept) pair of the eval sample has an empty mask: nothing shows what the model does when "
            "the concept is absent; annotate images without the concept with all-background masks, or raise eval.size"
        )
    threshold = target.model.threshold
    concepts, means, worst_pair = {}, {}, {}
    for concept, idx in pairs.items():
        per_prompt = {}
        for k, prompt in enumerate(spec.prompts_of(concept)):
            probs = probabilities(target, data.prompts(k))
            shares = [float((probs[i] > threshold)[spec.counted(data.masks[i])].mean()) for i in idx]
            per_prompt[prompt] = float(np.mean(shares))
            top = int(np.argmax(shares))
            if concept not in worst_pair or shares[top] > worst_pair[concept]["share"]:
                worst_pair[concept] = {"sample": int(idx[top]), "prompt": prompt, "share": shares[top]}
        means[concept] = float(np.mean(list(per_prompt.values())))
        concepts[concept] = {
            "empty_pairs": len(idx),
            "samples": idx.tolist(),
            "per_prompt": per_prompt,
            "mean_share": means[concept],
            "worst_pair": worst_pair[concept],
        }
    worst = max(means, key=means.get)
    value = means[worst]
    passed = bool(value <= cfg["max_share"])
    listed = "; ".join(
        f"{c} {m:.4f} over {len(pairs[c])} pair{'s' if len(pairs[c]) != 1 else ''} x "
        f"{len(spec.prompts_of(c))} prompt{'s' if len(spec.prompts_of(c)) != 1 else ''}"
        for c, m in means.items()
    )
    no_pairs = [c for c in by_concept(target) if c not in pairs]
    measured = f"foreground share on (image, concept) pairs without the concept: {listed} (max {cfg['max_share']:g})"
    if no_pairs:
        measured += f"; every pair of {', '.join(no_pairs)} shows it (not judged)"
    message = measured if passed else (
        f"{measured}: asked for {worst!r} where there is none, the model paints {value:.1%} of the image (worst pair: "
        f"sample {worst_pair[worst]['sample']}, {worst_pair[worst]['prompt']!r}, {worst_pair[worst]['share']:.1%}): it "
        "finds what it was trained to find whatever the image shows; train with negative pairs (empty masks)"
    )  # fmt: skip
    return GateResult(
        "negative_prompt",
        value,
        cfg["max_share"],
        passed,
        message,
        rule="value <= threshold",
        details={"concepts": concepts, "worst_concept": worst, "threshold": threshold, "not_judged": no_pairs},
    )


@hookimpl
def segcheck_register_gates(registry):
    common = {"needs": NEEDS, "suite": "prompted"}
    registry.add("prompt_metrics", prompt_metrics, section="prompt_metrics", **common)
    registry.add(
        "prompted_collapse",
        prompted_collapse,
        section="prompted_collapse",
        figures=gate_figures.prompted_collapse,
        **common,
    )
    registry.add("prompted_noise_input", prompted_noise_input, section="prompted_noise_input", **common)
    registry.add("prompt_sensitivity", prompt_sensitivity, section="prompt_sensitivity", **common)
    registry.add("paraphrase_consistency", paraphrase_consistency, section="paraphrase_consistency", **common)
    registry.add(
        "negative_prompt", negative_prompt, section="negative_prompt", figures=gate_figures.negative_prompt, **common
    )
