"""The ``segcheck`` console script: ``check``, ``list``, ``train``, ``ablate``, ``report`` and ``predict``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import textwrap
from pathlib import Path

from segcheck import SegcheckError, __version__


def _plugins(args):
    from segcheck import plugins

    return plugins.load(args.plugin)


def _positive(kind):
    """An argparse type: a number of ``kind`` > 0."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    return parse


def _model_arg(text: str):
    from segcheck.config import model_arg

    try:
        return model_arg(text)
    except SegcheckError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_list(args) -> int:
    from segcheck.gates.registered import summary

    loaded = _plugins(args)
    registries = (
        ("models", loaded.models),
        ("datasets", loaded.datasets),
        ("gates", loaded.gates),
        ("scorers", loaded.scorers),
        ("metrics", loaded.metrics),
    )
    columns = shutil.get_terminal_size((100, 24)).columns
    for title, registry in registries:
        print(f"{title}:")
        for entry in registry:
            description = entry.meta.get("description") or summary(entry.obj)
            print(f"  {entry.name}  [{entry.plugin}]")
            _wrapped(description, 6, columns)
            for arg, what in (entry.meta.get("args") or {}).items():
                _wrapped(f"--model-arg {arg}=...: {what}", 6, columns, hang=4)
    if loaded.absent:
        print("absent (optional extras not installed):")
        for name, note in loaded.absent.items():
            print(f"  {name}")
            _wrapped(note, 6, columns)
    return 0


def _wrapped(text: str, indent: int, columns: int, hang: int = 0) -> None:
    """Print ``text`` whole, wrapped at word boundaries to ``columns`` (at least 60 wide), every
    line ``indent`` in and continuation lines ``hang`` further."""
    width = max(columns - 1, indent + 60)
    lines = textwrap.wrap(text, width, initial_indent=" " * indent, subsequent_indent=" " * (indent + hang))
    print("\n".join(lines))


def cmd_train(args) -> int:
    from segcheck.train import train
    from segcheck.train.recipes import Recipe

    # every recipe setting that has a flag and was given on the command line
    overrides = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe) if getattr(args, f.name, None) is not None
    }
    result = train(
        args.model,
        args.dataset,
        args.recipe,
        out=args.out,
        device=args.device,
        seed=args.seed,
        data_root=args.data_root,
        plugin_specs=args.plugin,
        progress=not args.quiet,
        resume=args.resume,
        init=args.init,
        model_args=dict(args.model_arg),
        overwrite=args.overwrite,
        **overrides,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 writes and reports
        return 0
    score = f"val mIoU {result.val_miou:.4f}"
    if result.val_foreground_iou is not None:  # a prompted model: its per-concept foreground IoU, not a 2-class mIoU
        score = "val foreground IoU " + ", ".join(f"{c} {v:.4f}" for c, v in result.val_foreground_iou.items())
    print(
        f"wrote {result.path} (+ {result.path.with_suffix('.yaml').name}): {score}, "
        f"{result.seconds:.0f} s, {result.images_per_second:.1f} img/s"
    )
    return 0


def cmd_predict(args) -> int:
    """Load the target the options name as a gate run would, and write its masks (segcheck.predict)."""
    from segcheck.manifest import target_spec
    from segcheck.predict import predict

    loaded = _plugins(args)
    row = {
        "model": args.model,
        "dataset": args.dataset,
        "device": args.device,
        "model_args": dict(args.model_arg),
        "trust_checkpoint": args.trust_checkpoint,
    }
    for key in ("checkpoint", "data_root"):
        if getattr(args, key) is not None:
            row[key] = str(getattr(args, key))
    written = predict(
        loaded,
        target_spec(loaded, row),
        args.out,
        split=args.split,
        batch_size=args.batch_size,
        resize=args.eval_resize,
        limit=args.limit,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    print(written.summary())
    return 0


def cmd_ablate(args) -> int:
    from segcheck.train import ablation

    if args.prompted and args.dataset_variant != "standard":
        raise SegcheckError(
            "--prompted ablates the binary recipes on synthetic-drywall; it has no --dataset-variant (drop one)"
        )
    common = dict(out_dir=args.out, epochs=args.epochs, device=args.device, seed=args.seed, overwrite=args.overwrite)
    if args.prompted:
        print(ablation.run_binary(**common))
        return 0
    print(ablation.run(**common, dataset_variant=args.dataset_variant))
    return 0


def cmd_report(args) -> int:
    """``segcheck report merge A.json B.json ... -o FLEET.json`` or ``segcheck report [render]
    RUN.json -o OUT``: the first word of REPORT decides the form."""
    if args.reports[0] == "merge":
        return report_merge(args.reports[1:], args.out, args.plugin, overwrite=args.overwrite, unrelated=args.unrelated)
    paths = args.reports[1:] if args.reports[0] == "render" else args.reports
    return report_render(paths, args.out, args.plugin, overwrite=args.overwrite)


def report_merge(
    paths: list[str], out: Path | None, plugin_specs: list[str], *, overwrite: bool = False, unrelated: bool = False
) -> int:
    """Combine JSON reports (the shards of a fleet; separate runs only with ``unrelated``) into
    one, with the fleet view recomputed over all of them (the fleet-level gates run again, with
    the reports' settings); print the view.
    ``out`` is checked (``segcheck.outputs``) before anything is read."""
    import json

    from segcheck import fleet
    from segcheck.outputs import check_output
    from segcheck.report import write_json

    if not paths:
        raise SegcheckError(
            "segcheck report merge needs the JSON reports to merge: segcheck report merge A.json B.json -o FLEET.json"
        )
    if out is None:
        raise SegcheckError("segcheck report merge needs -o FLEET.json, the merged report to write")
    check_output(out, "-o", suffixes=(".json",), inputs=[Path(p) for p in paths], overwrite=overwrite)
    reports = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise SegcheckError(f"report {path} does not exist; pass the JSON files --segcheck-report wrote")
        try:
            reports.append((str(path), json.loads(path.read_text(encoding="utf-8"))))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SegcheckError(
                f"report {path} is not JSON ({exc}); pass the JSON files --segcheck-report wrote"
            ) from None
    targets, thresholds, records = fleet.merge_reports(reports, unrelated=unrelated)
    gates = _plugins(argparse.Namespace(plugin=plugin_specs)).gates.gates("fleet")
    view = fleet.fleet_view(targets, records, fleet.thresholds_config(thresholds), gates, unrelated=unrelated)
    write_json(out, targets, thresholds, records, fleet=view)
    if view is not None:
        print("\n".join(fleet.fleet_lines(view)))
    passed = sum(r.passed for r in records)
    print(
        f"{passed} of {len(records)} gates passed over {len(targets)} targets from {len(reports)} reports; wrote {out}"
    )
    return 0


def report_render(paths: list[str], out: Path | None, plugin_specs: list[str], *, overwrite: bool = False) -> int:
    """``segcheck report [render] RUN.json -o RUN.html`` (or ``.md``): re-render a saved run;
    ``out`` (and a Markdown page's figures folder) checked first (``segcheck.outputs``)."""
    from segcheck.render import check_page, render

    if len(paths) != 1 or out is None:
        raise SegcheckError(
            "segcheck report render takes one JSON report and -o OUT.html or OUT.md: "
            "segcheck report render segcheck-report.json -o run.html"
        )
    check_page(out, "-o", inputs=[Path(paths[0])], overwrite=overwrite)
    print(f"wrote {render(Path(paths[0]), out)}")
    return 0


CHECK_USAGE = "segcheck check {gates,anomaly,prompted,metrics} [pytest options and segcheck options]"


def cmd_check(rest: list[str]) -> int:
    """``segcheck check SUITE [options]``: ``pytest --pyargs segcheck.suites.SUITE [options]`` in
    this process (the suites ship in the package, so it runs from any folder); pytest's exit code."""
    from segcheck.suites import SUITES

    if not rest or rest[0] in ("-h", "--help"):
        print(
            f"usage: {CHECK_USAGE}\n\nRuns one of segcheck's suites with pytest, from any folder: the same as "
            "pytest --pyargs segcheck.suites.SUITE [options], with pytest's exit codes. Every pytest option "
            "works (-k, -m, -x, -n 2, --junitxml) and every segcheck option (--model, --checkpoint, --dataset, "
            "--data-root, --plugin, ...); segcheck check gates --help lists them."
        )
        return 0 if rest else 2
    suite, options = rest[0], rest[1:]
    if suite not in SUITES:
        print(f"segcheck: error: unknown suite {suite!r}; expected one of {', '.join(SUITES)}: {CHECK_USAGE}",
              file=sys.stderr)  # fmt: skip
        return 2
    import pytest

    # -p names the plugin its pytest11 entry point registers (once), also when PYTEST_DISABLE_PLUGIN_AUTOLOAD is
    # set; -W: pytest would rewrite the asserts of segcheck's package, which this command has imported already
    quiet = "ignore:Module already imported so cannot be rewritten; segcheck:pytest.PytestAssertRewriteWarning"
    args = ["-p", "segcheck.pytest_plugin", "-W", quiet, "--pyargs", f"segcheck.suites.{suite}", *options]
    return int(pytest.main(args))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segcheck", description="Validity gates for semantic-segmentation models.")
    p.add_argument("--version", action="version", version=f"segcheck {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "check",
        help="run a suite (gates, anomaly, prompted, metrics) with pytest from any folder: "
        "segcheck check gates -m 'not train' --model mypkg.models:build",
        usage=CHECK_USAGE,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="PATH_OR_MODULE",
        help="a .py file or module implementing segcheck hooks (repeatable)",
    )
    lst = sub.add_parser("list", parents=[common], help="registered models, datasets, gates and metrics")
    lst.set_defaults(run=cmd_list)
    tr = sub.add_parser("train", parents=[common], help="train a registered model on a registered dataset")
    tr.add_argument("--model", default="unet")
    tr.add_argument(
        "--model-arg",
        action="append",
        default=[],
        type=_model_arg,
        metavar="K=V",
        help="builder keyword argument, VALUE read as YAML (repeatable; `segcheck list` shows each model's)",
    )
    tr.add_argument("--dataset", default="synthetic-streets")
    tr.add_argument("--data-root", type=Path)
    tr.add_argument(
        "--recipe",
        default="robust",
        help="naive, robust; binary models: naive-binary, focal-binary, robust-binary (default: robust)",
    )
    tr.add_argument("--epochs", type=_positive(int), help="override the recipe's epochs")
    tr.add_argument("--batch-size", type=_positive(int), help="override the recipe's batch size")
    tr.add_argument("--lr", type=_positive(float), help="override the recipe's learning rate")
    for flag in ("flips", "rolls", "shifts", "scale-crops", "photometric"):
        tr.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, help=f"ingredient: random {flag}")
    tr.add_argument(
        "--balanced",
        action=argparse.BooleanOptionalAction,
        help="ingredient (binary): weigh positives by (1 - f) / f, f the foreground fraction",
    )
    tr.add_argument("--consistency", type=float, metavar="W", help="ingredient: KL(clean || noisy) weight (0.1)")
    tr.add_argument(
        "--photometric-consistency",
        type=float,
        metavar="W",
        help="ingredient: KL(clean || photometric view) weight (0.1)",
    )
    tr.add_argument(
        "--jpeg-views",
        type=float,
        metavar="P",
        help="with --photometric-consistency: the share of views that are a JPEG round trip, quality 30-94 (0)",
    )
    tr.add_argument(
        "--jpeg-on-views",
        type=float,
        metavar="P",
        help="with --photometric-consistency: the share of views also put through a JPEG round trip, quality 30-94, "
        "after their photometric change (0)",
    )
    tr.add_argument(
        "--view-shift",
        type=int,
        metavar="PX",
        help="with --photometric-consistency: also translate each view by up to PX pixels and compare it with the "
        "clean prediction translated alike (0)",
    )
    tr.add_argument("--recon", type=float, metavar="W", help="ingredient: reconstruction-head MSE weight (0.5)")
    tr.add_argument("--outlier-exposure", type=float, metavar="W", help="ingredient: uniform loss on noise inputs")
    tr.add_argument(
        "--outlier-paste", type=float, metavar="W", help="ingredient: uniform loss on random shapes pasted into images"
    )
    tr.add_argument(
        "--input-gradient", type=float, metavar="W", help="ingredient: exp(-||dL/dx||) penalty weight (0.1)"
    )
    tr.add_argument(
        "--contrastive", type=float, metavar="W", help="ingredient: supervised pixel-contrastive loss weight (0.1)"
    )
    tr.add_argument("--dice", type=float, metavar="W", help="ingredient: soft Dice loss weight (1.0)")
    tr.add_argument("--focal", type=float, metavar="GAMMA", help="ingredient (binary): focal loss gamma (2.0)")
    tr.add_argument(
        "--average-epochs",
        type=int,
        metavar="N",
        help="save the mean of the weights at the end of each of the last N epochs (stochastic weight averaging; 0)",
    )
    tr.add_argument("--resume", action="store_true", help="continue from OUT's .resume.pt (written each epoch)")
    tr.add_argument(
        "--init",
        type=Path,
        metavar="CHECKPOINT",
        help="fine-tune: start from these weights (they must fit the model; a fresh optimizer and schedule)",
    )
    tr.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--out", type=Path, required=True, help="checkpoint path (.safetensors); a .yaml sidecar is written beside it"
    )
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.add_argument(
        "--overwrite", action="store_true", help="replace OUT and its sidecar even when segcheck did not write them"
    )
    tr.set_defaults(run=cmd_train)
    pr = sub.add_parser(
        "predict",
        parents=[common],
        help="write a model's masks for every image of a dataset split as PNGs (loaded as a gate run loads it)",
        description="Prompted models: OUT/{image_id}__{prompt}.png for every image and every prompt of every "
        "concept (0/255; the prompt with characters other than letters, digits, - and _ made _). Closed-set "
        "models: OUT/{image_id}.png holding class ids (uint8; uint16 above 256 classes).",
    )
    pr.add_argument("--model", required=True, help="a registered model (`segcheck list`)")
    pr.add_argument(
        "--checkpoint",
        help="weights file or folder; default: the model's bundled checkpoint for the dataset; none: random init",
    )
    pr.add_argument(
        "--model-arg",
        action="append",
        default=[],
        type=_model_arg,
        metavar="K=V",
        help="builder keyword argument, VALUE read as YAML (repeatable)",
    )
    pr.add_argument("--dataset", required=True, help="a registered dataset (`segcheck list`)")
    pr.add_argument("--data-root", type=Path, help="the dataset's folder (file datasets)")
    pr.add_argument("--split", default="val", help="the split whose images are predicted (default val)")
    pr.add_argument("--out", type=Path, required=True, help="folder the PNGs are written to (created)")
    pr.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    pr.add_argument("--trust-checkpoint", action="store_true", help="let a pickled checkpoint run its code")
    pr.add_argument(
        "--eval-resize",
        default="",
        metavar="POLICY",
        help="resize images first (HxW or short:S, as in gate runs); masks are written at that size",
    )
    pr.add_argument("--batch-size", type=_positive(int), default=8, help="masks per forward pass (default 8)")
    pr.add_argument("--limit", type=_positive(int), metavar="N", help="only the first N images, in the dataset's order")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.add_argument(
        "--overwrite",
        action="store_true",
        help="write into OUT even inside the dataset root, replacing files segcheck predict did not write",
    )
    pr.set_defaults(run=cmd_predict)
    ab = sub.add_parser("ablate", help="train one unet per recipe ingredient and tabulate the gates' verdicts")
    ab.add_argument("--out", type=Path, required=True, help="folder for checkpoints, reports and ablation.md")
    ab.add_argument(
        "--prompted",
        action="store_true",
        help="the binary recipes of unet-prompted on synthetic-drywall, judged by suites/prompted (prompted.md)",
    )
    ab.add_argument(
        "--dataset-variant",
        choices=("standard", "shortcut"),
        default="standard",
        help="standard: synthetic-streets, judged by suites/gates and suites/anomaly; shortcut: "
        "synthetic-streets-shortcut (weak, shared appearance cues), judged by suites/gates, with the field "
        "reports' decision rule checked",
    )
    ab.add_argument("--epochs", type=_positive(int), help="override every variant's epochs")
    ab.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ab.add_argument("--seed", type=int, default=0)
    ab.add_argument(
        "--overwrite", action="store_true", help="replace files in OUT that segcheck did not write (default: refuse)"
    )
    ab.set_defaults(run=cmd_ablate)
    rp = sub.add_parser(
        "report",
        parents=[common],
        help="combine or render JSON reports: `segcheck report merge A.json B.json ... -o FLEET.json`, "
        "`segcheck report render RUN.json -o RUN.html`",
        usage="segcheck report merge A.json B.json ... -o FLEET.json [--plugin P]\n"
        "       segcheck report [render] RUN.json -o OUT.html|OUT.md",
        description="merge: combine the JSON reports of shards (--shard K/N) into one, with the fleet view over "
        "all of them. render (the default): a saved run as one self-contained HTML page, or Markdown with PNGs "
        "beside it, by the suffix of -o.",
    )
    rp.add_argument(
        "reports", nargs="+", metavar="REPORT", help="'merge' or 'render' (default), then the JSON report(s)"
    )
    rp.add_argument("-o", "--out", type=Path, help="the file to write (merge: the combined JSON report)")
    rp.add_argument(
        "--overwrite", action="store_true", help="replace OUT even when segcheck did not write it, or it is an input"
    )
    rp.add_argument(
        "--unrelated",
        action="store_true",
        help="merge: accept reports of separate runs (not the --shard K/N reports of one run); the fleet view "
        "then compares targets that need not share a cause",
    )
    rp.set_defaults(run=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["check"]:  # everything after the suite is pytest's: argparse never sees it
        return cmd_check(argv[1:])
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except SegcheckError as exc:
        print(f"segcheck: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
