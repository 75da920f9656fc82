"""The one table of defaults and thresholds, and its overrides from ``segcheck.yaml``."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from segcheck import SegcheckError

DEFAULTS: dict[str, dict] = {
    "target": {"model": "unet", "dataset": "synthetic-streets", "device": "auto", "init_seed": 0},
    "eval": {
        "split": "val",
        "size": 32,
        "seed": 0,
        "batch_size": 8,
        "mean": [],
        "std": [],
        "resize": "",
        "max_megapixels": 64.0,
        "batch_pixels": 4194304,
        "backward_pixels": 1048576,
    },
    "noise_input": {"max_miou": 0.10, "max_ratio": 0.7, "seed": 0},
    "overfit_tiny": {
        "min_miou": 0.90,
        "stop_miou": 0.95,
        "samples": 10,
        "epochs": 50,
        "batch_size": 2,
        "lr": 0.003,
        "class_weight_power": 0.5,
        "seed": 0,
    },
    "input_baseline": {"margin": 0.15, "steps": 150, "batch_size": 16, "samples": 256, "lr": 0.003, "seed": 0},
    "positional_prior": {"margin": 0.15, "train_samples": 256, "seed": 0},
    "content_sensitivity": {
        "min_gap": 0.10,
        "shift_px": 8,
        "min_agreement": 0.90,
        "min_grad_norm": 1e-8,
        "grad_images": 4,
        "seed": 0,
    },
    # severity 0: the mild level, 1-5: ImageNet-C's (segcheck.perturb); corruption_robustness reports all of 1-5
    "perturbation_stability": {"severity": 0, "min_agreement": 0.90, "max_miou_drop": 0.05, "seed": 0},
    "prediction_collapse": {"min_class_fraction": 0.5, "max_dominance_excess": 0.20},
    "calibration": {"max_ece": 0.05, "bins": 15},
    "error_analysis": {"worst_images": 4, "dilation_ratio": 0.02},
    "generalization": {"split": "test", "max_gap": 0.05},
    "loss_at_init": {"tolerance": 0.5, "images": 4, "seed": 0},
    "gradient_coverage": {"images": 2, "seed": 0, "allow": []},
    "batch_independence": {"images": 4, "atol": 1e-3, "rtol": 1e-3},
    "deterministic_eval": {"images": 4, "atol": 1e-5, "rtol": 1e-5},
    "input_normalization": {"max_abs_mean": 1.0, "min_std": 0.25, "max_std": 4.0},
    # data audits: label errors found by the model's probabilities, images shared by splits, shifted splits
    "label_quality": {
        "max_flagged_share": 0.01,
        # below it, the model's own errors would read as label errors: not judged
        "min_accuracy": 0.90,
        "min_image_share": 0.01,
        "train_images": 0,
        "pixels_per_image": 16384,
        "seed": 0,
    },
    "split_leakage": {"max_leaked_share": 0.0, "max_distance": 0.25, "fleet_images": 2048},
    "split_shift": {"max_divergence": 0.01},
    "cpu_cuda_agreement": {"images": 4, "min_agreement": 0.99},
    "anomaly": {
        "split": "",
        "max_images": 0,
        "batch_size": 8,
        "batch_pixels": 2097152,
        "temperature": 1.0,
        "stats_images": 64,
        "bins": 65536,
        "exact_limit": 1048576,
        "per_image_exact_limit": 262144,
        "min_auroc": 0.85,
        "max_fpr95": 0.50,
        "min_gt_size": 100,
        "min_pred_size": 500,
        "size_reference": 2097152,
        "max_known_miou_drop": 0.10,
    },
    # text-prompted binary models (suites/prompted), per concept and prompt
    "prompt_metrics": {"min_iou": 0.15},
    "prompted_collapse": {"min_positive_ratio": 0.5, "max_positive_ratio": 4.0},
    "prompted_noise_input": {"max_iou": 0.10, "max_ratio": 0.7, "seed": 0},
    "prompt_sensitivity": {"min_gap": 0.10},
    # min_prompt_gap: below it (another concept's prompt gives about the same mask), paraphrases
    # agree trivially and the gate is not applicable
    "paraphrase_consistency": {"min_iou": 0.80, "min_prompt_gap": 0.10},
    "negative_prompt": {"max_share": 0.01},
    # fleet-level (a run of several targets): the fleet_spread finding and the cross_dataset gate
    "fleet_spread": {"max_fail_fraction": 0.5, "min_tag_spread": 0.01},
    "cross_dataset": {"min_spread": 0.0},
}


# The range of every numeric setting ("[" / "]" closed, "(" / ")" open), by key name, or by
# "section.key" where one section differs. A value outside is an error naming the range.
RANGES: dict[str, str] = {
    "seed": "[0, inf)",
    "init_seed": "[0, inf)",
    "size": "[1, inf)",
    "batch_size": "[1, inf)",
    "samples": "[1, inf)",
    "train_samples": "[1, inf)",
    "epochs": "[1, inf)",
    "steps": "[1, inf)",
    "images": "[1, inf)",
    "grad_images": "[1, inf)",
    "shift_px": "[1, inf)",
    "severity": "[0, 5]",
    "lr": "(0, inf)",
    "max_megapixels": "(0, inf)",
    "batch_pixels": "[1, inf)",
    "backward_pixels": "[1, inf)",
    "class_weight_power": "[0, 2]",
    "max_miou": "(0, 1]",
    "max_ratio": "(0, 1]",
    "min_miou": "(0, 1]",
    "stop_miou": "(0, 1]",
    "margin": "[0, 1)",
    "min_gap": "[0, 1)",
    "min_prompt_gap": "[0, 1)",
    "min_agreement": "(0, 1]",
    "max_miou_drop": "[0, 1)",
    "min_grad_norm": "[0, inf)",
    "min_class_fraction": "(0, 1]",
    "max_dominance_excess": "[0, 1)",
    "max_gap": "[0, 1)",
    "tolerance": "(0, inf)",
    "atol": "[0, inf)",
    "rtol": "[0, inf)",
    "max_abs_mean": "(0, inf)",
    "min_std": "(0, inf)",
    "max_std": "(0, inf)",
    "max_images": "[0, inf)",
    "temperature": "(0, inf)",
    "stats_images": "[1, inf)",
    "bins": "[2, inf)",
    "exact_limit": "[0, inf)",
    "per_image_exact_limit": "[0, inf)",
    "min_auroc": "[0, 1]",
    "max_fpr95": "[0, 1]",
    "min_gt_size": "[0, inf)",
    "min_pred_size": "[0, inf)",
    "size_reference": "[0, inf)",
    "max_known_miou_drop": "[0, 1]",
    "max_fail_fraction": "[0, 1)",
    "min_tag_spread": "[0, 1]",
    "min_spread": "[0, 1]",
    "min_iou": "[0, 1]",
    "max_iou": "(0, 1]",
    "min_positive_ratio": "[0, inf)",
    "max_positive_ratio": "(0, inf)",
    "max_flagged_share": "[0, 1]",
    "min_accuracy": "[0, 1]",
    "min_image_share": "(0, 1]",
    "train_images": "[0, inf)",
    "pixels_per_image": "[64, inf)",
    "max_leaked_share": "[0, 1]",
    "max_distance": "[0, 0.5]",
    "fleet_images": "[0, inf)",
    "max_divergence": "[0, 1]",
    "max_ece": "[0, 1]",
    "calibration.bins": "[1, 1000]",
    "worst_images": "[1, inf)",
    "dilation_ratio": "(0, 1)",
    "max_share": "[0, 1]",
}


#: settings that are lists of strings (every other list holds numbers)
STRING_LISTS = ("gradient_coverage.allow",)


def _in_range(value: float, bounds: str) -> bool:
    low, high = (float(v) for v in bounds[1:-1].split(","))
    above = value > low if bounds[0] == "(" else value >= low
    below = value < high if bounds[-1] == ")" else value <= high
    return above and below


def check_range(section: str, key: str, value, where: str) -> None:
    """Raise naming ``where``, the value and the range when a numeric setting is out of its range."""
    if section not in DEFAULTS:
        return  # a third-party gate's section: its values are typed, its ranges are its own
    bounds = RANGES.get(f"{section}.{key}", RANGES.get(key))
    if bounds is not None and _is_number(value) and not _in_range(float(value), bounds):
        raise SegcheckError(f"{where} is {value!r}, outside its range {bounds}")


def read_yaml(path: Path, what: str, advice: str = ""):
    """The safe-loaded YAML at ``path``; broken YAML (or a binary file) is one line naming ``what``."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SegcheckError(f"{what} {path} is not valid YAML ({' '.join(str(exc).split())}){advice}") from None


def load(path: Path | None = None, overrides: dict | None = None, defaults: dict | None = None) -> dict:
    """``defaults`` (DEFAULTS unless given), updated by the YAML file at ``path`` (safe-loaded),
    then by ``overrides``.

    Unknown sections or keys and values of the wrong type are errors that name them.
    """
    layers = [(str(path), read_file(path))] if path is not None else []
    return layered(DEFAULTS if defaults is None else defaults, [*layers, ("command line", overrides or {})])[0]


def merge(config: dict, update: dict, source: str) -> None:
    """Update ``config`` in place from ``{section: {key: value}}``, checking names and types."""
    for section, values in update.items():
        if section not in config:
            raise SegcheckError(f"{source}: unknown section {section!r}; known: {', '.join(config)}")
        if not isinstance(values, dict):
            raise SegcheckError(f"{source}: section {section!r} must be a mapping of settings")
        for key, value in values.items():
            if key not in config[section]:
                raise SegcheckError(f"{source}: unknown setting {section}.{key}; known: {', '.join(config[section])}")
            config[section][key] = _checked(value, config[section][key], f"{source}: {section}.{key}")
            check_range(section, key, value, f"{source}: {section}.{key}")
            if (section, key) == ("eval", "resize"):
                from segcheck.resize import parse

                parse(value)


#: a layer of settings: where they were declared, and ``{section: {key: value}}``
Layer = tuple[str, dict]


def layered(defaults: dict, layers: list[Layer]) -> tuple[dict, dict[str, tuple[object, str]]]:
    """``defaults`` updated by each layer in turn, lowest first, each checked like ``segcheck.yaml``
    (names, types, ranges; an error names the layer's source), and ``{"section.key": (value,
    source)}`` of every value that differs from its default, with the layer that set it last."""
    config, sources = copy.deepcopy(defaults), {}
    for source, values in layers:
        if not isinstance(values, dict):
            raise SegcheckError(f"{source}: settings must be a mapping of sections, got {type(values).__name__}")
        merge(config, values, source)
        for section, keys in values.items():
            for key in keys:
                if config[section][key] != defaults[section][key]:
                    sources[f"{section}.{key}"] = (config[section][key], source)
                else:
                    sources.pop(f"{section}.{key}", None)
    return config, sources


def changes(before: dict, after: dict) -> dict:
    """``{section: {key: value}}`` of the values of ``after`` that differ from ``before``."""
    changed: dict = {}
    for section, values in after.items():
        for key, value in values.items():
            if before.get(section, {}).get(key) != value:
                changed.setdefault(section, {})[key] = value
    return changed


def read_file(path: Path) -> dict:
    """The settings of the YAML file ``path`` (``segcheck.yaml``), a mapping of sections."""
    path = Path(path)
    if not path.is_file():
        raise SegcheckError(f"config file {path} does not exist")
    data = read_yaml(path, "config file") or {}
    if not isinstance(data, dict):
        raise SegcheckError(f"config file {path} must be a YAML mapping of sections, got {type(data).__name__}")
    return data


def with_sections(sections: dict[str, dict]) -> dict:
    """DEFAULTS plus the sections of third-party gates (a built-in section cannot be redefined)."""
    defaults = copy.deepcopy(DEFAULTS)
    for section, values in sections.items():
        if section in defaults and values != defaults[section]:
            raise SegcheckError(f"gate settings section {section!r} is segcheck's own; give the gate another section")
        defaults[section] = copy.deepcopy(values)
    return defaults


def validated(config: dict, defaults: dict, source: str) -> dict:
    """``config`` checked against ``defaults`` like a YAML file would be (names and types)."""
    checked = copy.deepcopy(defaults)
    if not isinstance(config, dict):
        raise SegcheckError(f"{source}: the configuration must stay a mapping of sections")
    merge(checked, config, source)
    return checked


def model_arg(text: str) -> tuple[str, object]:
    """``"KEY=VALUE"`` (``--model-arg``) -> (key, VALUE safe-loaded as YAML: 3 -> int, a list
    ``[64, 32]``, a mapping ``{classes: 3}``, else the string)."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise SegcheckError(f"--model-arg expects KEY=VALUE with KEY a Python name, got {text!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        return key, value


def eval_sample(config: dict) -> dict:
    """The keyword arguments of ``EvalData.from_dataset`` that ``config["eval"]`` sets."""
    ev = config["eval"]
    keys = ("split", "size", "seed", "batch_size", "resize", "max_megapixels", "batch_pixels", "backward_pixels")
    return {key: ev[key] for key in keys}


def explicit_normalization(config: dict) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``eval.mean``/``eval.std`` as tuples, or (None, None) when unset; both or neither,
    three numbers each on the 0-1 pixel scale (std > 0)."""
    mean, std = config["eval"]["mean"], config["eval"]["std"]
    if not mean and not std:
        return None, None
    ok = len(mean) == len(std) == 3 and all(0 <= v <= 1 for v in mean) and all(0 < v <= 1 for v in std)
    if not ok:
        raise SegcheckError(
            f"eval.mean {mean} / eval.std {std}: give both, three numbers each on the 0-1 pixel "
            "scale (e.g. --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225), std > 0"
        )
    return tuple(mean), tuple(std)


def _checked(value, default, where: str):
    """``value`` as the type of its default (float, int, str or a list of numbers), or an error naming ``where``."""
    if where.endswith(STRING_LISTS):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise SegcheckError(f"{where} must be a list of non-empty strings, got {value!r}")
        return list(value)
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)) or not all(_is_number(v) for v in value):
            raise SegcheckError(f"{where} must be a list of numbers, got {value!r}")
        return [float(v) for v in value]
    number = _is_number(value)
    if isinstance(default, float):
        if not number:
            raise SegcheckError(f"{where} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, int):
        if not number or not float(value).is_integer():
            raise SegcheckError(f"{where} must be a whole number, got {value!r}")
        return int(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise SegcheckError(f"{where} must be a string, got {value!r}")
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def thresholds(config: dict) -> dict[str, object]:
    """Flat ``{"section.key": value}`` of every gate setting, for headers and reports."""
    return {f"{s}.{k}": v for s, values in config.items() if s not in ("target",) for k, v in values.items()}
