"""segcheck: validity gates for semantic-segmentation models."""

__version__ = "0.1.0"


class SegcheckError(Exception):
    """A user-facing error: its message is one line saying what was wrong and what to do."""
