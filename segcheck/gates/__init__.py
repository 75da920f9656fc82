"""Gates: plain functions ``gate(target, cfg) -> GateResult``; no pytest inside."""

from segcheck.gates.audits import (batch_independence, cpu_cuda_agreement, deterministic_eval, finite_outputs,
                                   gradient_coverage, head_matches_classes, input_normalization, label_integrity,
                                   loss_at_init, output_size)
from segcheck.gates.collapse import prediction_collapse
from segcheck.gates.content import derangement_gap, input_gradient, shift_equivariance
from segcheck.gates.noise import noise_input
from segcheck.gates.prior import positional_prior
from segcheck.gates.result import GateResult
from segcheck.gates.split_gap import NoHeldOutSplit, generalization
from segcheck.gates.stability import CORRUPTIONS, perturbation_stability
from segcheck.gates.training import input_baseline, overfit_tiny

__all__ = ["CORRUPTIONS", "GateResult", "NoHeldOutSplit", "batch_independence", "cpu_cuda_agreement", "derangement_gap",
           "deterministic_eval", "finite_outputs", "generalization", "gradient_coverage", "head_matches_classes",
           "input_baseline", "input_gradient", "input_normalization", "label_integrity", "loss_at_init",
           "noise_input", "output_size", "overfit_tiny", "perturbation_stability", "positional_prior",
           "prediction_collapse", "shift_equivariance"]
