"""What a target's clean prediction shows before a gate's message blames position or training:
a randomly initialized model, a prediction of one class everywhere, a prediction that does not
depend on the input. Gates say it first and point to the gate that judges it."""

from __future__ import annotations

import numpy as np


def one_class(target) -> str | None:
    """The class the clean prediction shows everywhere, or None when it shows several."""
    classes = np.unique(target.predictions.labels)
    if len(classes) != 1:
        return None
    spec = target.data.spec
    return spec.classes[classes[0]] if 0 <= classes[0] < spec.num_classes else str(classes[0])


def input_independent(target) -> bool:
    """Whether every eval image, and a constant mid-gray image, get the same label map (computed once)."""

    def compute() -> bool:
        labels = target.predictions.labels
        if any(not np.array_equal(labels[0], other) for other in labels[1:]):
            return False
        gray = np.full_like(target.data.images[:1], 128)
        prompts = target.data.prompts()[:1] if target.model.prompted else None
        return bool(np.array_equal(target.model.predict_pixels(gray, 1, prompts)[0][0], labels[0]))

    return target.model.memo("input independent", target.data, compute)


def random_init(target) -> bool:
    """Whether the model under test is a registered architecture with no weights loaded
    (``--checkpoint none``), as its provenance says (a model a callable returns may be trained)."""
    return str(target.model.provenance.get("checkpoint", "")).startswith("none (random init")


RANDOM_INIT = (
    "the model is randomly initialized (--checkpoint none), so it has learnt nothing yet: pass the trained weights "
    "with --checkpoint"
)


def random_init_clause(target) -> str | None:
    """:data:`RANDOM_INIT` for a randomly initialized target (a message must not blame its training), else None."""
    return RANDOM_INIT if random_init(target) else None


def state(target) -> str | None:
    """One clause naming what explains a gate's failure before position or training does (a
    random init, one class everywhere), or None: then the gate's own reading stands (a fixed
    label map of several classes is the positional shortcut those readings name)."""
    if random_init(target):
        return RANDOM_INIT
    name = one_class(target)
    if name is not None:
        return f"the model predicts one class, {name!r}, everywhere on the real images (see prediction_collapse)"
    return None
