"""What the benchmark scripts share: a worker run in a fresh process, and Markdown tables."""

from __future__ import annotations

import json
import subprocess
import sys


def worker_result(cmd: list[str], env: dict, label: str) -> dict | None:
    """Run ``cmd`` (a worker that prints its result as JSON on its last line); the result, or
    None with a note on standard error when it failed."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  ({label}: not measured: {last})", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(header, rows) -> None:
    """Print a Markdown table, then a blank line."""
    print(row(header))
    print(row(["---"] * len(header)))
    for r in rows:
        print(row(r))
    print()
