"""The result every gate returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from segcheck import SegcheckError


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
        if not isinstance(self.passed, bool | np.bool_):
            given = f"{self.passed!r} ({type(self.passed).__name__})"
            raise SegcheckError(f"GateResult {self.name!r}: passed is {given}; give True or False")
        object.__setattr__(self, "passed", bool(self.passed))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NotApplicable(SegcheckError):
    """Raised by a gate that finds, once it looks, that the target gives it nothing to judge
    (e.g. a held-out split that holds the eval images themselves): a SKIP with this reason."""


class TargetProblem(SegcheckError):
    """A problem of the target, not of one gate (e.g. eval masks without a labelled pixel): the
    first gate that meets it is an ERROR with this line, the target's later ones SKIP naming
    that gate. ``key`` tells one problem from another."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
