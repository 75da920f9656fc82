"""The result every gate returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GateResult:
    """A gate's verdict: ``value`` measured against ``threshold`` (``rule`` says how).

    ``message`` is one line for humans: what was measured, against what, and on failure the
    likely cause. ``details`` holds every other number the gate measured.
    """

    name: str
    value: float
    threshold: float
    passed: bool
    message: str
    rule: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        from segcheck import SegcheckError

        if not isinstance(self.passed, bool | np.bool_):
            given = f"{self.passed!r} ({type(self.passed).__name__})"
            raise SegcheckError(f"GateResult {self.name!r}: passed is {given}; give True or False")
        object.__setattr__(self, "passed", bool(self.passed))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
