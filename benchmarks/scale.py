"""What segcheck costs on full-size data, against the forward passes inside it, and its memory.

    python benchmarks/scale.py                       # the whole table (about an hour on 2 cores)
    python benchmarks/scale.py --quick               # smaller sizes and counts (minutes)
    python benchmarks/scale.py --only gates --models null --sizes 4,16 --shape 512x1024
    python benchmarks/scale.py --device cuda --models deeplabv3_resnet50   # on a GPU machine

Data are written once to ``--data`` (default ``/tmp/segcheck-scale``): a ``folder`` dataset of
synthetic-streets scenes upscaled to ``--shape`` (train 64, val and test the largest eval size;
smooth pictures, so the PNG files stay small), and a StreetHazards-layout dataset at 1280x720
(test images beyond the first 20 are hard links, so 1,500 of them cost 20 images of disk).

Rows, one fresh ``pytest`` process each, serial, one run:

- ``gates``: ``pytest suites/gates -m "not train and not gpu"`` on the folder data with
  ``--eval-size N``, for the ``null`` model (a 1x1 convolution, so segcheck's own work is what
  is measured) and ``timed-unet`` (the bundled unet, its checkpoint): wall seconds, seconds
  inside the model's top-level calls (forward only), their ratio, and the process's peak RSS;
- ``anomaly``: ``pytest suites/anomaly`` on the StreetHazards-layout data, the ``null`` model
  with 13 classes, ``anomaly.max_images`` N: wall seconds, peak RSS, pixels per second of the
  anomaly split.

The figures are whole processes (start-up, data reading and reports included); a busy machine
inflates the seconds, not the memory. ``benchmarks/_scale_models.py`` is the plugin with the
two models and their clock.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from _report import table
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
SH_FOLDERS = {"train": "train/{kind}/training", "val": "train/{kind}/validation", "test": "test/{kind}/test"}


def upscaled(image: np.ndarray, mask: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic scene at ``shape`` (H, W): the image bilinear, the mask nearest."""
    h, w = shape
    big = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    labels = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((w, h), Image.NEAREST))
    return big, labels


def write_folder(root: Path, shape: tuple[int, int], counts: dict[str, int]) -> None:
    """A ``folder`` dataset of upscaled synthetic-streets scenes (``counts`` images per split)."""
    from segcheck_plugins.synthetic_streets import SyntheticStreets

    for split, count in counts.items():
        scenes = SyntheticStreets(split=split, length=max(count, 1))  # distinct images per split
        for i in range(count):
            image, mask = upscaled(*scenes[i], shape)
            for kind, array in (("images", image), ("masks", mask)):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / split / kind / f"{i:04d}.png", compress_level=1)
    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": list(scenes.spec.classes)}))


def write_streethazards(root: Path, test_images: int, distinct: int = 20) -> None:
    """A StreetHazards-layout dataset at 1280x720: 64 train, 8 val, ``test_images`` test images
    (anomalies in the test split; images past the first ``distinct`` are hard links)."""
    from segcheck_plugins.synthetic_streets import SyntheticStreets

    scenes = SyntheticStreets(split="anomaly", length=distinct)
    known = SyntheticStreets(split="train", length=64)

    def scene(dataset, i, anomalies: bool):
        image, mask = upscaled(*dataset[i], (720, 1280))
        on_disk = np.where(mask == 255, 1, mask.astype(np.int64) + 1)  # 1-indexed, 1 = unlabeled
        on_disk[mask == 8] = 14 if anomalies else 2  # synthetic-streets' anomaly label -> StreetHazards' 14
        return image, np.clip(on_disk, 1, 14).astype(np.uint8)

    for split, count, dataset in (("train", 64, known), ("val", 8, known), ("test", test_images, scenes)):
        for i in range(count):
            paths = [sh_path(root, split, kind, i) for kind in ("images", "annotations")]
            for path in paths:
                path.parent.mkdir(parents=True, exist_ok=True)
            if split == "test" and i >= distinct:
                for path, kind in zip(paths, ("images", "annotations")):
                    os.link(sh_path(root, split, kind, i % distinct), path)
                continue
            image, mask = scene(dataset, i % len(dataset), split == "test")
            Image.fromarray(image).save(paths[0], compress_level=1)
            Image.fromarray(mask).save(paths[1], compress_level=1)


def sh_path(root: Path, split: str, kind: str, i: int) -> Path:
    return root / SH_FOLDERS[split].format(kind=kind) / "t1" / f"{i:05d}.png"


def measured(cmd: list[str], clock: Path, env: dict) -> dict:
    """Run ``cmd``; its wall seconds, peak RSS (MiB, of this one process), exit code, and the
    seconds its model spent in forward calls (``clock``)."""
    clock.unlink(missing_ok=True)
    start = time.perf_counter()
    env = {**env, "SCALE_CLOCK": str(clock)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    inside = sum(float(line.split()[0]) for line in clock.read_text().splitlines()) if clock.exists() else 0.0
    code = os.waitstatus_to_exitcode(status)
    tail = output.decode(errors="replace").strip().splitlines()[-1:] or [""]
    return {"wall": wall, "rss": usage.ru_maxrss / 1024, "inside": inside, "code": code, "tail": tail[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "segcheck-scale")
    p.add_argument("--shape", default="1024x2048", help="HxW of the gates' folder data (default 1024x2048)")
    p.add_argument("--sizes", default="4,8,16,32", help="eval sizes of the gates rows")
    p.add_argument("--models", default="null,timed-unet", help="models of the gates rows")
    p.add_argument("--anomaly", default="100,400,1500", help="anomaly-split images of the anomaly rows")
    p.add_argument("--only", choices=("gates", "anomaly"), help="one part of the table")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--quick", action="store_true", help="512x1024, eval sizes 4 and 8, 100 anomaly images")
    p.add_argument("--batch-size", type=int, default=8, help="eval.batch_size and anomaly.batch_size (default 8)")
    p.add_argument("--repo", type=Path, default=ROOT, help="the segcheck checkout to measure (default: this one)")
    args = p.parse_args()
    repo = args.repo.resolve()
    if args.quick:
        args.shape, args.sizes, args.anomaly = "512x1024", "4,8", "100"
    shape = tuple(int(v) for v in args.shape.split("x"))
    sizes = [int(v) for v in args.sizes.split(",")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(repo), os.environ.get("PYTHONPATH", "")])}
    args.data.mkdir(parents=True, exist_ok=True)
    settings = args.data / f"batch-{args.batch_size}.yaml"
    settings.write_text(
        yaml.safe_dump({"eval": {"batch_size": args.batch_size}, "anomaly": {"batch_size": args.batch_size}})
    )
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--plugin", "_scale_models"]
    base += ["--device", args.device, "--segcheck-config", str(settings)]
    clock = args.data / "clock.txt"
    print(f"segcheck scale benchmark of {repo}: {os.cpu_count()} CPUs, device {args.device}, batch {args.batch_size}\n")
    if args.only != "anomaly":
        folder = args.data / f"folder-{args.shape}"
        if not (folder / "dataset.yaml").exists():
            write_folder(folder, shape, {"train": 64, "val": max(sizes), "test": max(sizes)})
        rows = []
        for model in args.models.split(","):
            bundled = ROOT / "plugins" / "checkpoints" / "unet_synthetic-streets_robust.safetensors"
            checkpoint = ["--checkpoint", "none" if model == "null" else str(bundled)]
            for n in sizes:
                cmd = [*base, str(repo / "suites" / "gates"), "-m", "not train and not gpu", "--model", model,
                       *checkpoint, "--dataset", "folder", "--data-root", str(folder), "--eval-size", str(n),
                       "--segcheck-report", str(args.data / f"gates-{model}-{n}.json")]  # fmt: skip
                r = measured(cmd, clock, env)
                ratio = r["wall"] / r["inside"] if r["inside"] else float("nan")
                rows.append((model, f"{args.shape} x {n}", f"{r['wall']:.1f}", f"{r['inside']:.1f}", f"{ratio:.2f}",
                             f"{r['rss']:.0f}", r["code"]))  # fmt: skip
                print(f"  gates {model} {n}: {r['tail']}", file=sys.stderr)
        table(("model", "eval images", "wall s", "s in the model", "wall / model", "peak RSS MiB", "exit"), rows)
    if args.only != "gates":
        rows = []
        for n in (int(v) for v in args.anomaly.split(",")):
            root = args.data / f"streethazards-{n}"
            if not (root / "test").exists():
                write_streethazards(root, n)
            cmd = [*base, str(repo / "suites" / "anomaly"), "--model", "null", "--checkpoint", "none",
                   "--dataset", "streethazards", "--data-root", str(root),
                   "--segcheck-report", str(args.data / f"anomaly-{n}.json")]  # fmt: skip
            r = measured(cmd, clock, env)
            pixels = n * 1280 * 720
            rows.append((f"{n} x 1280x720", f"{r['wall']:.1f}", f"{r['rss']:.0f}", f"{pixels / r['wall'] / 1e6:.2f}",
                         r["code"]))  # fmt: skip
            print(f"  anomaly {n}: {r['tail']}", file=sys.stderr)
        table(("anomaly split (null model)", "wall s", "peak RSS MiB", "Mpixel/s", "exit"), rows)


if __name__ == "__main__":
    main()
