"""What each split of a dataset holds, read once for split_leakage and split_shift: a perceptual
hash, the brightness, contrast and size of every image, and the pixels of each class, streamed
(one image at a time; only these compact numbers are kept).

The hash of an image is imagehash's DCT hash (``phash``) and gradient hash (``dhash``), 16x16
each: 512 bits, compared by Hamming distance as a share of the bits. Re-encoding, resizing and
small crops move few bits; different scenes, even of one synthetic layout, differ in a quarter
of them or more.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image
from tqdm import tqdm

#: bits of one image's hash (phash and dhash, 16x16 each), and its bytes
HASH_BITS = 512
HASH_BYTES = HASH_BITS // 8
#: an image is shrunk by a whole factor (box filter) until its short side is below this before hashing
HASH_SIDE = 256
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint16)


def image_hash(image: np.ndarray) -> np.ndarray:
    """The 512-bit perceptual hash (:data:`HASH_BYTES` uint8) of an RGB uint8 image (H, W, 3)."""
    grey = Image.fromarray(np.ascontiguousarray(image)).convert("L")
    factor = min(grey.size) // HASH_SIDE
    if factor > 1:  # both hashes resample to 16-17 px anyway: a large image is shrunk first, fast
        grey = grey.reduce(factor)
    bits = np.concatenate(
        [imagehash.phash(grey, hash_size=16).hash.ravel(), imagehash.dhash(grey, hash_size=16).hash.ravel()]
    )
    return np.packbits(bits)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances (len(a), len(b)) uint16 between hashes ``a`` (N, 64) and ``b`` (M, 64)."""
    a64, b64 = (np.ascontiguousarray(h).view(np.uint64) for h in (a, b))
    out = np.empty((len(a), len(b)), np.uint16)
    rows = max(1, (1 << 22) // max(1, len(b) * a64.shape[1]))  # ~32 MB of XORs at a time
    for start in range(0, len(a), rows):
        x = a64[start : start + rows, None, :] ^ b64[None, :, :]
        if hasattr(np, "bitwise_count"):
            out[start : start + rows] = np.bitwise_count(x).sum(-1, dtype=np.uint16)
        else:  # numpy < 2.0
            out[start : start + rows] = _POPCOUNT[x.view(np.uint8)].sum(-1, dtype=np.uint16)
    return out


@dataclass
class SplitScan:
    """One split, read: per image its ``names`` (file stem or ``split[i]``), ``hashes`` (N, 64)
    uint8, ``brightness`` and ``contrast`` (mean and standard deviation of its grey levels,
    0-255), ``sizes`` (N, 2) (H, W) and ``class_counts`` (N, C) int32, its pixels of each class
    (None: an unlabelled split); ``same_as``: the earlier split that serves the same files (a
    flat folder layout), or None."""

    split: str
    names: list[str]
    hashes: np.ndarray
    brightness: np.ndarray
    contrast: np.ndarray
    sizes: np.ndarray
    class_counts: np.ndarray | None
    same_as: str | None = None

    @property
    def class_pixels(self) -> np.ndarray | None:
        """The pixels of each class (C,) int64 over the split (None: an unlabelled split)."""
        return None if self.class_counts is None else self.class_counts.sum(0, dtype=np.int64)

    @property
    def named(self) -> bool:
        """Whether the names come from the dataset (file stems), not ``split[i]``."""
        return bool(self.names) and not self.names[0].startswith(f"{self.split}[")


def image_name(dataset, split: str, index: int) -> str:
    """How reports name image ``index`` of ``split``: ``split/<image_id>`` when the dataset has
    ``image_id`` (a file stem), else ``split[index]``."""
    if hasattr(dataset, "image_id"):
        return f"{split}/{dataset.image_id(index)}"
    return f"{split}[{index}]"


def scan_split(dataset, split: str, num_classes: int | None) -> SplitScan:
    """Read every image (and mask) of ``dataset`` once: :class:`SplitScan` of it; class pixels
    are counted for ids 0..``num_classes``-1 (None: masks that name no classes), a bar on a TTY
    once it takes more than two seconds."""
    n = len(dataset)
    hashes = np.zeros((n, HASH_BYTES), np.uint8)
    brightness, contrast = np.zeros(n, np.float32), np.zeros(n, np.float32)
    sizes = np.zeros((n, 2), np.int32)
    counts = np.zeros((n, num_classes or 0), np.int32)
    labelled = False
    for i in tqdm(range(n), desc=f"split scan: {split}", delay=2, leave=False, disable=None):
        image, mask = dataset[i]
        image = np.asarray(image)
        hashes[i] = image_hash(image)
        grey = np.asarray(Image.fromarray(np.ascontiguousarray(image)).convert("L"), np.float32)
        brightness[i], contrast[i] = grey.mean(), grey.std()
        sizes[i] = image.shape[:2]
        if mask is not None and num_classes:
            labelled = True
            values = np.asarray(mask).ravel()
            values = values[(values >= 0) & (values < num_classes)]
            counts[i] = np.bincount(values.astype(np.int64), minlength=num_classes)
    names = [image_name(dataset, split, i) for i in range(n)]
    return SplitScan(split, names, hashes, brightness, contrast, sizes, counts if labelled else None)


def scan(target) -> dict[str, SplitScan]:
    """Every split of ``target``'s data that it can read (:func:`scan_split`), once per target
    (``ModelUnderTest.memo``); a split serving the same files as an earlier one is not read
    again (``same_as``). Without splits, the eval sample alone."""
    data = target.data

    def compute() -> dict[str, SplitScan]:
        classes = data.spec.num_classes if data.spec.class_labels else None
        if data.splits is None:
            pairs = [(image, None if data.masks is None else data.masks[i]) for i, image in enumerate(data.images)]
            return {data.split: scan_split(pairs, data.split, classes)}
        scans, files = {}, {}
        for split in (s for s in data.spec.splits if data.has_split(s)):
            dataset = data.dataset(split)
            key = tuple(map(str, getattr(dataset, "pairs", ()))) or None
            if key is not None and key in files:
                first = scans[files[key]]
                scans[split] = SplitScan(**{**vars(first), "split": split, "same_as": files[key]})
                continue
            if key is not None:
                files[key] = split
            scans[split] = scan_split(dataset, split, classes)
        return scans

    return target.model.memo("split scan", data, compute)


def encoded(scan: SplitScan) -> dict:
    """A split's hashes as plain JSON values (the fleet comparison's input): ``bits`` base64 of
    the hashes, ``names`` (None: ``split[i]``)."""
    bits = base64.b64encode(scan.hashes.tobytes()).decode("ascii")
    return {"bits": bits, "names": scan.names if scan.named else None}


def decoded(split: str, plain: dict) -> tuple[np.ndarray, list[str]]:
    """The hashes (N, 64) and names of :func:`encoded`'s output for ``split``."""
    hashes = np.frombuffer(base64.b64decode(plain["bits"]), np.uint8).reshape(-1, HASH_BYTES)
    names = plain.get("names") or [f"{split}[{i}]" for i in range(len(hashes))]
    return hashes, list(names)


def chance_divergence(a: np.ndarray, b: np.ndarray, draws: int = 200, seed: int = 0, level: float = 0.95) -> float:
    """The ``level`` quantile of the class-share divergence between two splits of the sizes of
    ``a`` and ``b`` (per-image class counts (N, C)) drawn at random from their pooled images:
    what splits of one distribution give by chance (a permutation test's critical value)."""
    pooled = np.concatenate([a, b]).astype(np.int64)
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(draws):
        order = rng.permutation(len(pooled))
        found.append(jensen_shannon(pooled[order[: len(a)]].sum(0), pooled[order[len(a) :]].sum(0)))
    return float(np.quantile(found, level))


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """The Jensen-Shannon divergence (base 2: 0 for equal distributions, 1 for disjoint ones) of
    two histograms (normalized here; an empty one gives NaN)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))


__all__ = [
    "HASH_BITS",
    "SplitScan",
    "chance_divergence",
    "decoded",
    "distances",
    "encoded",
    "image_hash",
    "image_name",
    "jensen_shannon",
    "scan",
    "scan_split",
]
