"""Gates: plain functions ``gate(target, cfg) -> GateResult``; no pytest inside."""

from segcheck.gates.audits import finite_outputs, head_matches_classes, label_integrity, output_size
from segcheck.gates.noise import noise_input
from segcheck.gates.result import GateResult

__all__ = ["GateResult", "finite_outputs", "head_matches_classes", "label_integrity", "noise_input", "output_size"]
