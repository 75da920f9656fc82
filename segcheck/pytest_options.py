"""The segcheck group of pytest options: one table row per option, validated on parsing."""

from __future__ import annotations

import pytest


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise pytest.UsageError(f"--eval-size expects a positive integer, got {text!r}")
    return value


def _three_numbers(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise pytest.UsageError(f"--mean/--std expect three comma-separated numbers (0-1 scale), got {text!r}")
    return values


def _model_arg(text: str) -> tuple[str, object]:
    from segcheck import SegcheckError
    from segcheck.config import model_arg

    try:
        return model_arg(text)
    except SegcheckError as exc:
        raise pytest.UsageError(str(exc)) from None


def _shard(text: str) -> tuple[int, int]:
    from segcheck import SegcheckError
    from segcheck.fleet import parse_shard

    try:
        return parse_shard(text)
    except SegcheckError as exc:
        raise pytest.UsageError(str(exc)) from None


REPEATED = {"action": "append"}
#: flag -> (dest, metavar, help, extra addoption arguments)
OPTIONS = {
    "--model": ("segcheck_model", "NAME", "registered model to test (default: unet; `segcheck list` shows all)", {}),
    "--checkpoint": (
        "segcheck_checkpoint",
        "PATH",
        "weights (.safetensors, .pt, .pth); default: the model's bundled checkpoint; 'none' for random init",
        {},
    ),
    "--trust-checkpoint": (
        "segcheck_trust_checkpoint",
        None,
        "let a pickled checkpoint run its code (a whole pickled model you trust); never needed for state dicts",
        {"action": "store_true", "default": False},
    ),
    "--model-arg": (
        "segcheck_model_arg",
        "KEY=VALUE",
        "keyword argument of the model's builder (repeatable; VALUE read as YAML)",
        {**REPEATED, "type": _model_arg},
    ),
    "--dataset": ("segcheck_dataset", "NAME", "registered dataset (default: synthetic-streets)", {}),
    "--data-root": ("segcheck_data_root", "DIR", "dataset folder, for file datasets", {}),
    "--models-manifest": (
        "segcheck_manifest",
        "FILE.yaml",
        "several targets: 'targets:', a list of rows (model, checkpoint, dataset, data_root, model_args, tags, "
        "name), over optional 'defaults:'",
        {},
    ),
    "--shard": (
        "segcheck_shard",
        "K/N",
        "run shard K of N of the targets (sorted ids, the i-th to shard i % N + 1), e.g. for a job array; "
        "`segcheck report merge` combines the shards' JSON reports",
        {"type": _shard},
    ),
    "--device": (
        "segcheck_device",
        None,
        "where the model runs (default: auto = cuda if available)",
        {"choices": ("auto", "cpu", "cuda")},
    ),
    "--mean": (
        "segcheck_mean",
        "R,G,B",
        "input normalization mean (0-1 scale); wins over the checkpoint's, the dataset's and the model's",
        {"type": _three_numbers},
    ),
    "--std": ("segcheck_std", "R,G,B", "input normalization std (0-1 scale)", {"type": _three_numbers}),
    "--plugin": (
        "segcheck_plugin",
        "PATH_OR_MODULE",
        "a .py file or module implementing segcheck hooks (repeatable)",
        {**REPEATED, "default": []},
    ),
    "--segcheck-config": (
        "segcheck_config",
        "FILE.yaml",
        "thresholds and settings (default: segcheck.yaml in the rootdir, if present)",
        {},
    ),
    "--eval-size": ("segcheck_eval_size", "N", "images in the eval sample (default: 32)", {"type": _positive_int}),
    "--eval-resize": (
        "segcheck_eval_resize",
        "POLICY",
        "one image size for data whose sizes differ: HxW (e.g. 512x512) or short:S (short side S, centre SxS crop)",
        {},
    ),
    "--segcheck-report": (
        "segcheck_report",
        "PATH.json",
        "where to write the JSON report (default: segcheck-report.json in the current folder, when gates ran); "
        "figures go to "
        "<report>.figures/ beside it",
        {},
    ),
    "--segcheck-html": (
        "segcheck_html",
        "PATH.html",
        "also write one self-contained HTML report with figures (plots need the segcheck[report] extra)",
        {},
    ),
    "--segcheck-md": ("segcheck_md", "PATH.md", "also write a Markdown report, its PNG figures beside it", {}),
    "--segcheck-overwrite": (
        "segcheck_overwrite",
        None,
        "let the JSON/HTML/Markdown reports replace files segcheck did not write (or inside --data-root); "
        "without it such a path is a usage error before any test (segcheck's own earlier reports are replaced)",
        {"action": "store_true", "default": False},
    ),
}


def add_options(parser) -> None:
    group = parser.getgroup("segcheck", "segcheck: validity gates for segmentation models")
    for flag, (dest, metavar, help, extra) in OPTIONS.items():  # help is plain text; argparse expands '%'
        escaped = help.replace("%", "%%")
        group.addoption(flag, dest=dest, help=escaped, **({"metavar": metavar} if metavar else {}), **extra)
