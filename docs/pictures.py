"""Make the docs' pictures again: the per-gate figures the HTML report draws, from real runs of
the suites on the bundled checkpoints. The screenshots of the HTML report itself
(``docs/assets/report.png``, ``report_failure.png``) are of the 10-target example fleet's page:

    pytest suites/gates --models-manifest examples/fleet.yaml -m "not train" -n 2 --segcheck-html f.html
    python benchmarks/report_screenshots.py f.html --out shots/   # first_screen.png, failing_gate.png

    python docs/pictures.py                      # into docs/assets/ (a few minutes on 2 CPU cores)
    python docs/pictures.py --site site --out shots   # screenshots of a built site's pages

Run it from the repository root, with segcheck installed with its ``dev`` extra (matplotlib draws
the plots) and Chromium for the screenshots (Debian: ``apt-get install chromium``). The PNGs are
reduced to 256 colours so that the repository stays small; the runs are seeded, so the same
checkpoints give the same pictures.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "docs" / "assets"
NAIVE = "plugins/checkpoints/unet_synthetic-streets_naive.safetensors"
NAIVE_BINARY = "plugins/checkpoints/unet-prompted_synthetic-drywall_naive-binary.safetensors"
#: (name, pytest arguments, the figures to keep: globs under <report>.figures/)
RUNS = (
    (
        "naive",  # the naive checkpoint: noise_input and perturbation_stability[jpeg] fail
        ["suites/gates", "-m", "not train", "--checkpoint", NAIVE],
        [
            "*/noise_input.*.png",
            "*/positional_prior.*.png",
            "*/prediction_collapse.*.png",
            "*/perturbation_stability_jpeg.*.png",
            "*/target.predictions.png",
        ],
    ),
    ("overfit", ["suites/gates", "-k", "overfit_tiny"], ["*/overfit_tiny.*.png"]),
    ("anomaly", ["suites/anomaly", "-k", "msp"], ["*/anomaly_detection_msp.*.png"]),
    (
        "prompted",  # the naive-binary checkpoint: the field report's collapse to background
        ["suites/prompted", "-k", "prompted_collapse", "--checkpoint", NAIVE_BINARY],
        ["*/prompted_collapse.*.png"],
    ),
)
#: the run whose HTML report the screenshot shows


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("docs/pictures.py: no Chromium found (Debian: apt-get install chromium)")


def screenshot(url: str, out: Path, width: int = 1280, height: int = 900) -> None:
    """A headless Chromium screenshot of ``url``, reduced to 256 colours."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += [f"--window-size={width},{height}", f"--screenshot={out}", url]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    small(out, out)


def small(source: Path, out: Path) -> None:
    """``source`` written to ``out`` as the smaller of itself and its 256-colour version."""
    original = Path(source).read_bytes()
    buffer = io.BytesIO()
    image = Image.open(io.BytesIO(original)).convert("RGB")
    palette = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.save(buffer, "PNG", optimize=True)
    Path(out).write_bytes(min(original, buffer.getvalue(), key=len))


#: shown over the report for its screenshot: the tables of what was tested and of the settings are
#: hidden, so that the picture shows the summary table and the first figures (the page is unchanged)
def figures() -> None:
    (ASSETS / "figures").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, args, keep in RUNS:
            html, report = Path(tmp) / f"{name}.html", Path(tmp) / f"{name}.json"
            command = [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider"]
            command += ["--segcheck-html", str(html), "--segcheck-report", str(report)]
            print("docs/pictures.py:", " ".join(command[2:]), flush=True)
            subprocess.run(command, cwd=ROOT, check=False)  # failing gates are the point of some runs
            for pattern in keep:
                found = sorted((Path(tmp) / f"{name}.figures").glob(pattern))
                if not found:
                    sys.exit(f"docs/pictures.py: run {name!r} drew no figure {pattern}")
                for png in found:
                    small(png, ASSETS / "figures" / png.name)


def site(built: Path, out: Path) -> None:
    """Screenshots of a built site's tutorial and noise_input pages (``mkdocs build`` first)."""
    out.mkdir(parents=True, exist_ok=True)
    for page, height in (("tutorial/index.html", 1400), ("gates/noise_input/index.html", 2200)):
        target = out / (page.split("/index.html")[0].replace("/", "_") + ".png")
        screenshot((built / page).resolve().as_uri(), target, height=height)
        print(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, help="a built site (mkdocs build): screenshot its pages instead")
    parser.add_argument("--out", type=Path, default=Path("site-shots"), help="where --site's screenshots go")
    args = parser.parse_args()
    if args.site:
        site(args.site, args.out)
    else:
        figures()


if __name__ == "__main__":
    main()
