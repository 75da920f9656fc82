"""Small wording helpers shared by messages: a long list cut to its first items with a count."""

from __future__ import annotations

from collections.abc import Iterable


def listed(names: Iterable, most: int = 8) -> str:
    """``names`` joined with commas: the first ``most`` of them, then "and N more"."""
    names = [str(n) for n in names]
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
