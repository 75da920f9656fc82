"""split_leakage and split_shift: what the dataset's splits hold, compared (no model involved);
cross_dataset_leakage: the same comparison between the datasets of a fleet."""

from __future__ import annotations

import itertools

import numpy as np

from segcheck import gate_figures
from segcheck.gates.result import GateResult, NotApplicable
from segcheck.hookspecs import hookimpl
from segcheck.splits import (
    HASH_BITS,
    SplitScan,
    chance_divergence,
    decoded,
    distances,
    encoded,
    jensen_shannon,
    scan,
)
from segcheck.target import Target

#: near-duplicate pairs listed in a record's details (closest first)
LISTED = 200
#: bins of the brightness and contrast histograms compared between splits (0-255 and 0-128)
STAT_BINS = 16


def _distinct(scans: dict[str, SplitScan]) -> list[str]:
    """The splits that serve files of their own (a flat layout's train/val/test are one)."""
    return [s for s, found in scans.items() if found.same_as is None]


def near_pairs(a: SplitScan, b: SplitScan, max_bits: int) -> tuple[list[tuple[int, int, int]], int | None]:
    """The pairs (i, j, bits) of image i of ``a`` and j of ``b`` whose hashes differ in at most
    ``max_bits`` bits, closest first, and the smallest distance of any pair (None: an empty split)."""
    if not len(a.hashes) or not len(b.hashes):
        return [], None
    d = distances(a.hashes, b.hashes)
    rows, cols = np.nonzero(d <= max_bits)
    pairs = sorted(zip(rows.tolist(), cols.tolist(), d[rows, cols].tolist()), key=lambda p: (p[2], p[0], p[1]))
    return pairs, int(d.min())


def _pair(a: SplitScan, b: SplitScan, i: int, j: int, bits: int) -> dict:
    return {"a": a.names[i], "b": b.names[j], "split_a": a.split, "index_a": i, "split_b": b.split, "index_b": j,
            "distance": bits / HASH_BITS}  # fmt: skip


def split_leakage(target: Target, cfg: dict) -> GateResult:
    """Near-duplicate images between the evaluated split and the other splits (perceptual hashes).

    **What it measures.** Every image of every split the dataset has (streamed, one image at a
    time; the eval split whole, not only the eval sample) gets a 512-bit perceptual hash:
    imagehash's DCT hash and gradient hash, 16x16 each, of the grey image. Two images whose
    hashes differ in at most ``max_distance`` of the bits (default 0.25) are near-duplicates:
    the same picture re-encoded (JPEG), resized, slightly cropped or brightened. The gate counts
    the evaluated split's images (``eval.split``) with a near-duplicate in any other split, and
    names every pair with both file names (in the message, and closest first in
    ``details["pairs"]``); pairs between two other splits (train and test) are named too. The
    figure puts each pair side by side (with none, the closest pairs, to show the margin).

    **Rule.** Passes when the leaked share of the evaluated split is <= ``max_leaked_share``
    (default 0: not one image). ``fleet_images`` (default 2048): a dataset with at most this many
    images keeps its hashes in the record (64 bytes an image, base64) so that a fleet run
    compares the datasets of its targets (``cross_dataset_leakage``); 0 keeps none.

    **Why it matters.** A validation image that is a copy of a training image scores what the
    model memorised, not what it learned: the val mIoU is optimistic, and a split that shares
    scenes with training hides overfitting from every other gate. Scraped or merged datasets,
    frames of one video split at random, and augmented copies saved to disk leak this way.

    **A failure usually means** that images were copied between splits, or frames of one
    sequence were split at random. Remove the listed images from one side, or split by scene,
    sequence or source. Flipped or heavily cropped copies are not caught (the hash is not
    invariant to them); a flat folder layout (one images/ folder serving every split) is a
    SKIP: its splits are the same files by design.
    """
    data = target.data
    scans = scan(target)
    evaluated = data.split
    mine = scans[evaluated]
    others = [s for s in _distinct(scans) if s != evaluated and len(scans[s].names)]
    if mine.same_as is not None or not others:
        why = (
            f"split {evaluated!r} serves the same files as {mine.same_as!r} (one images/ folder for every split)"
            if mine.same_as is not None
            else f"this data has no other split with images than {evaluated!r}"
        )
        raise NotApplicable(f"split_leakage compares the splits' images, but {why}: nothing to compare")
    max_bits = int(cfg["max_distance"] * HASH_BITS)
    found: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    closest: dict[tuple[str, str], int | None] = {}
    for a, b in itertools.combinations([evaluated, *others], 2):
        found[(a, b)], closest[(a, b)] = near_pairs(scans[a], scans[b], max_bits)
    leaked = sorted({i for (a, _), pairs in found.items() if a == evaluated for i, _, _ in pairs})
    value = len(leaked) / max(len(mine.names), 1)
    limit = cfg["max_leaked_share"]
    passed = value <= limit
    pairs = [_pair(scans[a], scans[b], i, j, bits) for (a, b), ps in found.items() for i, j, bits in ps]
    pairs.sort(key=lambda p: (p["split_a"] != evaluated, p["distance"], p["a"], p["b"]))
    listed_pairs = [f"{p['a']} ~ {p['b']} ({p['distance']:.3f})" for p in pairs]
    near = {f"{a}-{b}": len(ps) for (a, b), ps in found.items()}
    min_distance = {f"{a}-{b}": None if d is None else d / HASH_BITS for (a, b), d in closest.items()}
    images = {s: len(scans[s].names) for s in [evaluated, *others]}
    details = {
        "split": evaluated,
        "images": images,
        "leaked_images": [mine.names[i] for i in leaked][:LISTED],
        "near_pairs": near,
        "closest": min_distance,
        "pairs": pairs[:LISTED],
        "pairs_total": len(pairs),
        "max_distance": cfg["max_distance"],
    }
    total = sum(len(scans[s].names) for s in [evaluated, *others])
    if 0 < total <= cfg["fleet_images"]:
        details["hashes"] = {s: encoded(scans[s]) for s in [evaluated, *others]}
    read = ", ".join(f"{s} {n}" for s, n in images.items())
    others_text = " or ".join(repr(s) for s in others)
    evaluated_near = [p for p in pairs if p["split_a"] == evaluated]
    elsewhere = [p for p in pairs if p["split_a"] != evaluated]
    if not evaluated_near:
        nearest = min((d, k) for k, d in closest.items() if d is not None and k[0] == evaluated)
        measured = (
            f"no image of {evaluated!r} has a near-duplicate in {others_text} (hash distance <= "
            f"{cfg['max_distance']:.2f} of {HASH_BITS} bits; closest {nearest[0] / HASH_BITS:.3f}, {nearest[1][0]} vs "
            f"{nearest[1][1]}; images read: {read})"
        )
    else:
        shown = "; ".join(listed_pairs[: min(5, len(evaluated_near))])
        more = f" (+{len(evaluated_near) - 5} more pairs)" if len(evaluated_near) > 5 else ""
        measured = (
            f"{len(leaked)} of {len(mine.names)} {evaluated!r} images ({value:.1%}) have a near-duplicate in "
            f"{others_text} (hash distance <= {cfg['max_distance']:.2f}): {shown}{more}"
        )
    if elsewhere:
        between = sorted({f"{p['split_a']}-{p['split_b']}" for p in elsewhere})
        measured += f"; also {len(elsewhere)} pairs between {', '.join(between)}: " + "; ".join(
            f"{p['a']} ~ {p['b']} ({p['distance']:.3f})" for p in elsewhere[:3]
        )
    if passed:
        message = f"{measured}; leaked share {value:.1%} <= {limit:.1%}"
    else:
        message = (
            f"{measured}; leaked share {value:.1%} > {limit:.1%}: the model is scored on images it was trained on "
            "(copies, re-encodings, crops or frames of one sequence), so its score is optimistic; remove them from "
            "one split, or split by scene or source"
        )
    return GateResult("split_leakage", value, limit, passed, message, rule="value <= threshold", details=details)


def _histogram(values: np.ndarray, high: float) -> np.ndarray:
    return np.histogram(np.clip(values, 0, high), bins=STAT_BINS, range=(0, high))[0]


def image_statistics(found: SplitScan) -> dict:
    """Brightness and contrast (mean, std over images) and the image sizes (HxW: count) of a split."""
    sizes: dict[str, int] = {}
    for h, w in found.sizes.tolist():
        sizes[f"{h}x{w}"] = sizes.get(f"{h}x{w}", 0) + 1
    stats = {"images": len(found.names), "sizes": dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:5])}
    for what in ("brightness", "contrast"):
        values = getattr(found, what).astype(np.float64)
        stats[what] = {"mean": float(values.mean()), "std": float(values.std())} if len(values) else None
    return stats


def split_shift(target: Target, cfg: dict) -> GateResult:
    """Class balance and image statistics of each split; Jensen-Shannon divergence train vs the evaluated split.

    **What it measures.** Every image and mask of every split (read once, with split_leakage's
    scan): the share of each class among the labelled pixels of each split, and per image its
    brightness and contrast (mean and standard deviation of the grey levels) and size. The gate
    compares the class shares of ``train`` and of the evaluated split (``eval.split``) by their
    Jensen-Shannon divergence (base 2: 0 for the same shares, 1 for disjoint classes), names the
    classes present in one split and absent from another and the classes whose shares differ
    most, and reports the image statistics per split with the divergence of their histograms
    (16 bins). The figure draws the class shares per split, side by side, and the brightness
    histograms.

    **Rule.** Passes when the class-share divergence train vs evaluated split is <= the larger of
    ``max_divergence`` (default 0.01: about one class's share moving by ten points, e.g. 20% ->
    30%) and the chance level: the divergence that 95% of 200 random splits of the pooled train
    and evaluated images (of the same sizes, seeded) stay below, so that a small split's
    sampling noise alone never fails it. Image statistics are reported, not judged (a few images
    make noisy histograms).

    **Why it matters.** A validation split drawn from other places, seasons or sources than
    training scores the model on a different task: its mIoU weighs classes differently, and a
    class absent from training cannot be predicted. Cross-dataset evaluation should show such
    variation; a split that was meant to be the same distribution should not.

    **A failure usually means** that the splits were not drawn from one pool (by city, date,
    camera or annotation batch), or that one split's masks were made with another label
    mapping. Draw the splits at random from one pool (or stratify by class), or, where the
    shift is the point, raise ``max_divergence`` and judge per class.
    """
    data, spec = target.data, target.data.spec
    if not spec.class_labels:
        raise NotApplicable("split_shift compares class shares, but this dataset's masks name no classes")
    evaluated = data.split
    if evaluated == "train":
        raise NotApplicable("split_shift compares train with the evaluated split, which is train itself (eval.split)")
    scans = scan(target)
    train, mine = scans["train"], scans[evaluated]
    if (train.same_as or "train") == (mine.same_as or evaluated):
        raise NotApplicable(
            f"split_shift compares train with {evaluated!r}, but they are the same files (one images/ folder for "
            "every split): nothing to compare"
        )
    for found in (train, mine):
        if found.class_counts is None or not found.class_pixels.sum():
            raise NotApplicable(
                f"split_shift compares class shares, but split {found.split!r} ({len(found.names)} images) has no "
                f"labelled pixel of the {len(spec.classes)} classes: nothing to compare"
            )
    labelled = {s: f.class_pixels for s, f in scans.items() if f.class_counts is not None and f.same_as is None}
    labelled.update(train=train.class_pixels, **{evaluated: mine.class_pixels})  # also when they serve another's files
    classes = spec.classes
    shares = {s: pixels / max(int(pixels.sum()), 1) for s, pixels in labelled.items()}
    value = jensen_shannon(labelled["train"], labelled[evaluated])
    chance = chance_divergence(train.class_counts, mine.class_counts)
    divergences = {s: jensen_shannon(labelled["train"], pixels) for s, pixels in labelled.items() if s != "train"}
    absent = {}
    for c, name in enumerate(classes):
        present = [s for s, pixels in labelled.items() if pixels[c] > 0]
        missing = [s for s in labelled if s not in present]
        if present and missing:
            absent[name] = {"present": present, "absent": missing}
    gaps = sorted(range(len(classes)), key=lambda c: -abs(shares["train"][c] - shares[evaluated][c]))[:3]
    stats = {s: image_statistics(scans[s]) for s in scans if scans[s].same_as is None or s in ("train", evaluated)}
    stat_divergence = {
        what: jensen_shannon(_histogram(getattr(train, what), high), _histogram(getattr(mine, what), high))
        for what, high in (("brightness", 255.0), ("contrast", 128.0))
    }
    limit = cfg["max_divergence"]
    threshold = max(limit, chance)
    passed = bool(value <= threshold)
    differ = ", ".join(f"{classes[c]} {shares['train'][c]:.1%} vs {shares[evaluated][c]:.1%}" for c in gaps)
    measured = (
        f"class-share Jensen-Shannon divergence train vs {evaluated!r} {value:.4f} (largest differences: {differ}; "
        f"random splits of these sizes give <= {chance:.4f} in 95% of draws); brightness "
        f"{_mean(stats, 'train', 'brightness')} vs {_mean(stats, evaluated, 'brightness')}, contrast "
        f"{_mean(stats, 'train', 'contrast')} vs {_mean(stats, evaluated, 'contrast')} (histogram divergences "
        f"{stat_divergence['brightness']:.3f}, {stat_divergence['contrast']:.3f})"
    )
    if absent:
        measured += "; " + "; ".join(
            f"{name} absent from {', '.join(where['absent'])} (present in {', '.join(where['present'])})"
            for name, where in list(absent.items())[:4]
        )
    details = {
        "split": evaluated,
        "divergence": divergences,
        "chance_divergence": chance,
        "max_divergence": limit,
        "class_shares": {s: dict(zip(classes, v.tolist())) for s, v in shares.items()},
        "absent_classes": absent,
        "image_statistics": stats,
        "image_statistic_divergence": stat_divergence,
    }
    bound = f"{limit:.4f}" + (f" (chance level {chance:.4f} is higher: the bound)" if chance > limit else "")
    if passed:
        message = f"{measured}: divergence <= {bound}"
    else:
        message = (
            f"{measured}: divergence > {bound}: {evaluated!r} holds another class balance than train (splits "
            "drawn from different places, times or sources, or another label mapping), so its score weighs classes "
            "differently from training; draw the splits from one pool, or judge per class"
        )
    return GateResult("split_shift", value, threshold, passed, message, rule="value <= threshold", details=details)


def _mean(stats: dict, split: str, what: str) -> str:
    value = stats[split][what]
    return "-" if value is None else f"{value['mean']:.0f}"


def _dataset_key(row: dict) -> str:
    return row["dataset"] if not row.get("data_root") else f"{row['dataset']} ({row['data_root']})"


def cross_dataset_leakage(rows: list[dict], cfg: dict) -> dict[str, GateResult]:
    """Fleet: near-duplicate images between the datasets of a fleet's targets (split_leakage's hashes).

    For each pair of datasets (dataset name and data root) among the targets whose split_leakage
    record kept its hashes (``split_leakage.fleet_images``), every split of one is compared with
    every split of the other, as split_leakage compares the splits of one dataset. Passes when
    the share of the two evaluated splits' images with a near-duplicate in the other dataset is
    <= ``split_leakage.max_leaked_share``; a dataset without kept hashes is named, not compared.
    Why: a model trained on one dataset and judged on another that holds the same pictures
    (a copy, a derived or merged dataset) scores what it memorised.
    """
    kept: dict[str, tuple[str, dict]] = {}
    missing: dict[str, str] = {}
    for row in rows:
        details = (row.get("details") or {}).get("split_leakage")
        if row.get("dataset") is None or details is None:
            continue
        key = _dataset_key(row)
        if "hashes" in details:
            kept.setdefault(key, (details["split"], details["hashes"]))
        elif key not in kept:
            missing[key] = row["target"]
    results: dict[str, GateResult] = {}
    max_bits, limit = int(cfg["max_distance"] * HASH_BITS), cfg["max_leaked_share"]
    for key in sorted(set(missing) - set(kept)):
        if len(kept) + len(missing) < 2:
            break
        results[key] = GateResult(
            "cross_dataset_leakage", 0.0, limit, True,
            f"{key} not compared with the fleet's other datasets: target {missing[key]!r}'s split_leakage record kept "
            "no hashes (more images than split_leakage.fleet_images, or the gate did not run); raise it to compare",
            rule="reported",
        )  # fmt: skip
    for (key_a, (split_a, a)), (key_b, (split_b, b)) in itertools.combinations(sorted(kept.items()), 2):
        scans_a = {s: _scan_of(s, plain) for s, plain in a.items()}
        scans_b = {s: _scan_of(s, plain) for s, plain in b.items()}
        leaked_a, leaked_b, pairs = set(), set(), []
        for (sa, fa), (sb, fb) in itertools.product(scans_a.items(), scans_b.items()):
            for i, j, bits in near_pairs(fa, fb, max_bits)[0]:
                pairs.append((bits, f"{key_a}:{fa.names[i]}", f"{key_b}:{fb.names[j]}"))
                leaked_a |= {i} if sa == split_a else set()
                leaked_b |= {j} if sb == split_b else set()
        evaluated = len(scans_a[split_a].names) + len(scans_b[split_b].names)
        value = (len(leaked_a) + len(leaked_b)) / max(evaluated, 1)
        pairs.sort()
        shown = "; ".join(f"{x} ~ {y} ({bits / HASH_BITS:.3f})" for bits, x, y in pairs[:5])
        measured = (
            f"{len(pairs)} near-duplicate pairs between {key_a} and {key_b} (hash distance <= "
            f"{cfg['max_distance']:.2f}); {len(leaked_a) + len(leaked_b)} of the {evaluated} images of their evaluated "
            f"splits ({split_a!r}, {split_b!r}) have one in the other dataset ({value:.1%})"
        ) + (f": {shown}" if shown else "")
        passed = value <= limit
        message = (
            f"{measured}; <= {limit:.1%}"
            if passed
            else f"{measured}; > {limit:.1%}: the datasets share pictures, so a model trained on one is scored on "
            "images it has seen when judged on the other; remove the shared images from one of them"
        )
        details = {"pairs": [{"a": x, "b": y, "distance": bits / HASH_BITS} for bits, x, y in pairs[:LISTED]],
                   "pairs_total": len(pairs)}  # fmt: skip
        results[f"{key_a} ~ {key_b}"] = GateResult(
            "cross_dataset_leakage", value, limit, passed, message, rule="value <= threshold", details=details
        )
    return results


def _scan_of(split: str, plain: dict) -> SplitScan:
    hashes, names = decoded(split, plain)
    empty = np.zeros(len(names), np.float32)
    return SplitScan(split, names, hashes, empty, empty, np.zeros((len(names), 2), np.int32), None)


def _leakage_figures(target: Target, result: GateResult, cfg: dict) -> list:
    return gate_figures.split_leakage(target, result, scan(target))


def _shift_figures(target: Target, result: GateResult, cfg: dict) -> list:
    return gate_figures.split_shift(target, result, scan(target))


@hookimpl
def segcheck_register_gates(registry):
    registry.add("split_leakage", split_leakage, section="split_leakage", figures=_leakage_figures)
    registry.add(
        "split_shift", split_shift, section="split_shift", needs=("masks", "train_split"), figures=_shift_figures
    )
    registry.add(
        "cross_dataset_leakage", cross_dataset_leakage, section="split_leakage", markers=("fleet",), suite="fleet",
        description="fleet: near-duplicate images between the datasets of the fleet's targets (split_leakage's "
        "hashes); a share <= split_leakage.max_leaked_share",
    )  # fmt: skip
