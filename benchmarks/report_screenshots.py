"""Screenshots of a segcheck HTML report in headless Chromium: the first screen, the fleet
matrix and the first failing gate, as PNGs (what a person sees, checked in a real browser).

    python benchmarks/report_screenshots.py fleet.html --out shots/

needs a ``chromium`` (or ``google-chrome``) on PATH; the page is opened from disk, with its
figures beside it, as a user would open it.
"""

from __future__ import annotations

import argparse
import os
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


def shoot(page: Path, png: Path, anchor: str | None = None, size: str = "1400,1000") -> Path:
    """A screenshot of ``page`` at ``size`` pixels; with ``anchor``, from that element on (a
    copy of the page beside it hides what comes before, since a headless screenshot does not
    scroll to a fragment; the copy is removed)."""
    shown = page
    if anchor is not None:
        shown = page.with_name(f".screenshot-{os.getpid()}.html")
        hide = f"<style>body > *:has(~ #{anchor}){{display:none}}</style></head>"
        shown.write_text(page.read_text().replace("</head>", hide, 1))
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += [f"--window-size={size}", f"--screenshot={png.resolve()}", shown.resolve().as_uri()]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    finally:
        if shown != page:
            shown.unlink()
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
        print(shoot(args.page, args.out / f"{name}.png", anchor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
