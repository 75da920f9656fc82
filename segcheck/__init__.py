"""segcheck: validity gates for semantic-segmentation models.

``import segcheck`` imports nothing heavy (no torch): ``segcheck.check`` and
``segcheck.CheckResult`` load :mod:`segcheck.api` on first use.
"""

__version__ = "0.1.0"


class SegcheckError(Exception):
    """A user-facing error: its message is one line saying what was wrong and what to do."""


def __getattr__(name: str):
    if name in ("check", "CheckResult"):
        from segcheck import api

        return getattr(api, name)
    raise AttributeError(f"module 'segcheck' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "check", "CheckResult"])
