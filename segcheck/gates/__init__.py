"""Gates: plain functions ``gate(target, cfg) -> GateResult``; no pytest inside.

Each module registers its gates through ``segcheck_register_gates``, as a third party's
plugin would; ``segcheck.plugins`` loads every module of this package that does.
"""

from segcheck.gates.agreement import batch_independence, cpu_cuda_agreement, deterministic_eval
from segcheck.gates.audits import (
    finite_outputs,
    head_matches_classes,
    input_normalization,
    output_size,
)
from segcheck.gates.calibration import calibration, prompted_calibration
from segcheck.gates.collapse import prediction_collapse
from segcheck.gates.content import derangement_gap, input_gradient, shift_equivariance
from segcheck.gates.error_analysis import error_analysis
from segcheck.gates.fresh_audits import gradient_coverage, loss_at_init
from segcheck.gates.labels import label_integrity
from segcheck.gates.noise import noise_input
from segcheck.gates.overfit import overfit_tiny
from segcheck.gates.prior import positional_prior
from segcheck.gates.prompted import (
    negative_prompt,
    paraphrase_consistency,
    prompt_metrics,
    prompt_sensitivity,
    prompted_collapse,
    prompted_noise_input,
)
from segcheck.gates.registered import Gate, GateRegistry, NotApplicable, unmet_need
from segcheck.gates.result import GateResult
from segcheck.gates.split_gap import NoHeldOutSplit, generalization
from segcheck.gates.stability import CORRUPTIONS, corruption_robustness, perturbation_stability
from segcheck.gates.training import input_baseline

__all__ = [
    "CORRUPTIONS",
    "Gate",
    "GateRegistry",
    "GateResult",
    "NoHeldOutSplit",
    "NotApplicable",
    "batch_independence",
    "calibration",
    "corruption_robustness",
    "cpu_cuda_agreement",
    "derangement_gap",
    "deterministic_eval",
    "error_analysis",
    "finite_outputs",
    "generalization",
    "gradient_coverage",
    "head_matches_classes",
    "input_baseline",
    "input_gradient",
    "input_normalization",
    "label_integrity",
    "loss_at_init",
    "negative_prompt",
    "noise_input",
    "output_size",
    "overfit_tiny",
    "perturbation_stability",
    "paraphrase_consistency",
    "positional_prior",
    "prompt_metrics",
    "prompted_calibration",
    "prompt_sensitivity",
    "prompted_collapse",
    "prompted_noise_input",
    "prediction_collapse",
    "shift_equivariance",
    "unmet_need",
]
