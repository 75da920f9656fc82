"""Every hook segcheck calls. Plugins implement them with ``@segcheck.hookimpl``.

Hooks are called with keyword arguments only; an implementation may accept any subset of
the arguments named here. A misspelled ``segcheck_*`` implementation is an error
(``PluginManager.check_pending``).
"""

import pluggy

PROJECT = "segcheck"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def segcheck_register_models(registry):
    """Register segmentation model builders.

    :param segcheck.registry.Registry registry: call ``registry.add(name, builder, **meta)``.

    ``builder(num_classes: int, **kwargs) -> torch.nn.Module``. Its output may be a tensor
    (B, C, h, w), a dict with ``"out"`` (torchvision), or an object with ``.logits``.
    Recognised ``meta``: ``num_classes`` (the head size the builder is called with; default:
    the dataset's classes), ``mean``/``std`` (input normalization, pixel scale 0-1),
    ``binary`` (one sigmoid channel for two classes), ``prompted`` (a binary model whose
    ``forward(x, prompts)`` takes one text prompt per image, a list of strings; the plugin
    turns text into tokens or embeddings), ``divisible_by`` (input size
    constraint: inputs are padded to multiples of it wherever the module is called),
    ``aux_prefix`` (state-dict prefix of an auxiliary head; the builder then accepts
    ``aux_loss: bool``), ``frozen`` (parameter-name prefixes meant to get no gradient, e.g. a
    frozen backbone or encoder stages a shallow depth leaves unused; gradient_coverage
    allows them), ``checkpoint_folder`` (bool: ``--checkpoint`` may be a folder, as Hugging
    Face ``save_pretrained`` writes one; the builder is then called with ``config=<folder>``
    unless a ``config`` model arg is given, so the folder is also the architecture; its weights
    are its ``model.safetensors``, the shards of ``model.safetensors.index.json`` or
    ``pytorch_model.bin`` (weights only), loaded strictly with key prefixes matched exactly; its
    sidecar is ``<folder>/segcheck.yaml`` and its ``preprocessor_config.json`` (or
    ``processor_config.json``'s image processor) the normalization after the sidecar's),
    ``checkpoints`` (``{dataset_name: path}`` of bundled weights), ``wraps`` (the name of the
    model whose checkpoints this one loads, e.g. a wrapper around it: their sidecars name that
    model, and a sidecar naming any other model is an error), ``args`` (``{kwarg: what it
    does}``: the ``--model-arg K=V`` the builder takes, shown by ``segcheck list``),
    ``builds_weights`` (True when the builder returns the module with its weights, trained or set
    by hand: ``--checkpoint none`` then tests it as built, which messages do not call a random
    init), ``description``. ``divisible_by`` and ``frozen`` may be functions of
    the built module (``f(module=...)``), for constraints that depend on the model args.
    Any other key, or a name registered twice, is an error.
    """


@hookspec
def segcheck_register_datasets(registry):
    """Register datasets.

    :param segcheck.registry.Registry registry: call ``registry.add(name, factory, **meta)``.

    ``factory(root: pathlib.Path | None, split: str) -> segcheck.data.SegDataset``. A
    prompted dataset declares ``spec.prompts`` and gives ``pair(index) -> (image_id, concept)``.
    Recognised ``meta``: ``needs_root`` (bool: ``--data-root`` required), ``settings`` (the
    gate and eval settings the data needs, as in ``segcheck.yaml``: a mapping, or a function of
    the data root giving ``(mapping, where it was declared)``, e.g. a ``segcheck:`` mapping in its
    ``dataset.yaml``; they rank above the defaults and below ``segcheck_configure``,
    ``segcheck.yaml`` and the command line), ``description``. Any other key, or a name
    registered twice, is an error.
    """


@hookspec
def segcheck_register_metrics(registry):
    """Register metric implementations to property-test against segcheck's references.

    :param segcheck.registry.Registry registry: call ``registry.add(name, function, kind=...)``.

    ``kind="per_class_iou"``: ``function(pred, target, num_classes, ignore_index)``, called
    with four positional arguments: ``pred`` and ``target`` integer numpy arrays of one
    shape (any shape, e.g. (N, H, W); any integer dtype), ``num_classes`` an int C >= 1 and
    ``ignore_index`` an int outside ``0..C-1`` (e.g. 255 or -1). It returns per-class IoU
    ``TP / (TP + FP + FN)``, shape (C,), where pixels whose target is ``ignore_index`` are
    not counted at all (whatever their prediction), a class absent from both prediction
    and target is NaN (not 0, not 1), and any other label outside ``0..C-1`` raises an
    exception (of any type) instead of being dropped.

    A metric may declare its domain and conventions, and is tested on everything else:
    ``min_classes=N`` (it is never called with fewer classes, as torchmetrics refuses C = 1)
    and ``absent="zero"`` (an absent class scores 0, as torchmetrics does, instead of NaN).
    The suite's header prints what each metric declared.

    ``pytest suites/metrics --plugin FILE`` property-tests every registered function of
    this kind against segcheck's reference (``segcheck.metrics.reference``). An unknown
    ``kind`` or declaration value, or a name registered twice, is an error; segcheck
    registers its own as ``"segcheck"``.
    """


@hookspec(firstresult=True)
def segcheck_load_checkpoint(model, path):
    """Load the weights at ``path`` into ``model`` and return it, or ``None`` to pass.

    :param torch.nn.Module model: freshly built by the model's builder.
    :param pathlib.Path path: the checkpoint file (untrusted input), or a checkpoint folder
        for a model registered with ``checkpoint_folder`` (``segcheck.checkpoint`` reads one).

    The first non-None result wins. The built-in implementation runs last and reads
    ``.safetensors`` and ``.pt``/``.pth`` state dicts, and checkpoint folders, strictly, never
    executing pickles (``segcheck.checkpoint.read_state_dict`` and ``load_state`` are there to reuse).
    """


@hookspec
def segcheck_configure(config):
    """Adjust thresholds and settings before a run (called once per process).

    :param dict config: the defaults (with the registered gates' sections), mutable in place;
        see ``segcheck.config.DEFAULTS`` for its keys. What a hook changes is checked like
        ``segcheck.yaml`` and ranks above a dataset's declarations and below ``segcheck.yaml``
        and the command line; the report names the hook as the source of each value it set.
    """


@hookspec
def segcheck_register_scorers(registry):
    """Register per-pixel anomaly scorers.

    :param segcheck.scoring.ScorerRegistry registry: call ``registry.add(name, scorer, description=...)``.

    ``scorer(logits, **context) -> torch.Tensor``: ``logits`` (B, C, H, W) at input size, the
    result (B, H, W) floats, **higher = more anomalous** (negate a confidence). It may ask
    for ``temperature``, ``class_stats`` (per-class max-logit mean/std on the training split),
    ``inputs`` (the normalized batch) or ``module`` by naming them as keyword parameters
    (``segcheck.scoring``). ``suites/anomaly`` gates every registered scorer
    (``anomaly_detection[<name>]``); a name registered twice is an error.
    """


@hookspec
def segcheck_register_gates(registry, scorers):
    """Register validity gates.

    :param segcheck.gates.GateRegistry registry: call ``registry.add(name, function, **meta)``.
    :param segcheck.scoring.ScorerRegistry scorers: the registered anomaly scorers (filled
        before this hook), for gates registered once per scorer.

    ``function(target: segcheck.target.Target, cfg: dict) -> segcheck.gates.GateResult``;
    ``target.model`` is the ``ModelUnderTest``, ``target.data`` the ``EvalData``. Recognised
    ``meta``: ``section`` (the settings section passed as ``cfg``; ``{}`` without one; a
    section segcheck does not know takes its defaults from ``defaults``), ``needs`` (any of
    ``labels``, ``train_split``, ``held_out_split``, ``fresh_model``, ``cuda``: a target that
    does not meet one is a SKIP with the reason; ``varied_prediction``: a pass on a clean
    prediction of one class everywhere is a SKIP (agreement there proves nothing);
    ``finite_logits``: the gate judges the model's predictions, an ERROR when they are
    NaN/inf), ``markers`` (``train``, ``gpu``, ``fleet``: pytest markers of the gate's
    test), ``suite`` (``gates`` by default), ``description``, ``figures`` (a function
    ``figures(target, result, cfg) -> list[segcheck.figures.Figure]`` drawing the result's
    pictures for ``--segcheck-html``/``--segcheck-md``; ``segcheck.figures`` has the helpers),
    ``min_images`` (the fewest eval images the gate can judge), ``docs`` (the page, a path or
    URL, that the gate's failure messages end with as ``docs: <page>``; segcheck's own gates
    point to ``gates/<family>.md`` of its docs). The suites parametrize over this registry: a
    gate added here runs, and shows in the table and the JSON report, exactly like a built-in. A gate raising
    ``segcheck.gates.NotApplicable`` is a SKIP with its message; a result that passes with a
    non-finite value or threshold is an ERROR.

    ``suite="fleet"`` registers a fleet-level gate (e.g. ``cross_dataset``), no pytest test:
    ``function(rows: list[dict], cfg: dict) -> dict[str, GateResult]`` runs once at the end
    of a run of two or more targets (and in ``segcheck report merge``) over the fleet view's
    per-target rows (``segcheck.fleet.target_rows``: target, model, dataset, checkpoint, tags,
    real_miou, noise_miou, failed, ...), one result per subject it names; the results are the
    records under ``fleet.gates`` of the JSON report, and one that fails fails the run.
    """
