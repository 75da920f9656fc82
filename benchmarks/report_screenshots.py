"""Screenshots of a segcheck HTML report in headless Chromium: the first screen, the fleet
matrix and the first failing gate, as PNGs (what a person sees, checked in a real browser).

    python benchmarks/report_screenshots.py fleet.html --out shots/

needs a ``chromium`` (or ``google-chrome``) on PATH; the page is opened from disk, with its
figures beside it, as a user would open it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        sys.exit(f"no headless browser: install one of {', '.join(BROWSERS)}")
    return found


def shoot(page: Path, png: Path, size: str = "1400,1000") -> Path:
    """A screenshot of ``page`` (a file, optionally with ``#anchor``) at ``size`` pixels."""
    file, _, anchor = str(page).partition("#")
    url = Path(file).resolve().as_uri() + (f"#{anchor}" if anchor else "")
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += [f"--window-size={size}", f"--screenshot={png}", url]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return png


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="the HTML report (its figures beside it)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the PNGs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    text = args.page.read_text()
    shots = {"first_screen": None}
    if 'id="matrix"' in text:
        shots["fleet_matrix"] = "matrix"
    failing = re.search(r'<section class="gate (?:FAIL|ERROR)" id="([^"]+)"', text)
    if failing:
        shots["failing_gate"] = failing.group(1)
    for name, anchor in shots.items():
        page = args.page if anchor is None else Path(f"{args.page}#{anchor}")
        print(shoot(page, args.out / f"{name}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
