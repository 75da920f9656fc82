"""Training recipes: named sets of ingredients, each one a measurable switch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from segcheck import SegcheckError


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters and ingredients of one training run.

    ``flips``: random horizontal and vertical flips; ``rolls``: random circular shifts
    (vertical and horizontal); ``shifts``: random translations of up to a quarter of each side
    without wrap-around (replicated border, its mask pixels ignored; ``augment.shifts``);
    ``scale_crops``: multi-scale crops 0.5-2.0; all applied jointly to image and mask.
    ``photometric``: half the images get one random change of brightness, contrast, blur, JPEG
    quality or pixel noise (``augment.photometric``). ``consistency``: weight of
    KL(clean || noisy) with pixel noise sigma 0.05; ``photometric_consistency``: weight of
    KL(clean || view), the view being the same image after one more random photometric change
    (``augment.photometric`` on every image) moved by the same flips, rolls, shifts, crops and
    pastes (after AugMix's consistency, Hendrycks et al. 2020); ``jpeg_views``: the share (0-1)
    of those views that are a JPEG round trip at quality 30-94 instead (``augment.jpeg_views``;
    the random change is a JPEG one time in five); ``jpeg_on_views``: the share (0-1) of the
    views that then also go through such a round trip, after their photometric change (so one
    view can differ by, say, contrast and JPEG both); ``view_shift``: the most pixels (0: off) by
    which each photometric-consistency view is also translated, one random offset along a random
    axis per batch (``perturb.shift``, no wrap), its KL then taken against the clean prediction
    translated alike, on the region both cover (``augment.view_shift``); ``recon``: weight of a reconstruction head's
    MSE (model must accept ``recon_head=True``); ``outlier_exposure``: weight of a
    uniform-prediction loss on noise inputs; ``outlier_paste``: weight of a uniform-prediction
    loss on random shapes pasted into half the images (entropy maximization,
    ``augment.paste_outliers``; their pixels are left out of the cross-entropy), which teaches
    the model to be unsure on what it does not know; ``input_gradient``: weight of the
    ``exp(-||dL/dx||)`` penalty; ``contrastive``: weight of ``loss.pixel_contrast_loss`` on
    the model's ``"embed"`` output; ``dice``: weight of a soft Dice loss (``loss.dice_loss``:
    the foreground's for a binary model, the mean over present classes for a multi-class one).
    ``average_epochs``: the saved weights are the mean of the weights, BatchNorm statistics
    included, at the end of each of the last N epochs (stochastic weight averaging, Izmailov et
    al. 2018, who find such averages in flatter regions that generalize better:
    ``torch.optim.swa_utils.AveragedModel``); 0: the last epoch's.
    The torchvision auxiliary loss (weight 0.5) is used whenever the model returns ``"aux"``.
    Binary models (one sigmoid channel) only: ``balanced`` weighs each positive pixel by
    ``(1 - f) / f``, ``f`` the training masks' foreground fraction (weighted BCE); ``focal``:
    the focusing parameter gamma of a focal loss in place of the plain per-pixel loss (0: off).
    A prompted model is asked, for each sample, with one of its concept's prompts drawn at
    random (paraphrases included).
    """

    name: str
    epochs: int = 12
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    flips: bool = False
    rolls: bool = False
    shifts: bool = False
    scale_crops: bool = False
    photometric: bool = False
    consistency: float = 0.0
    photometric_consistency: float = 0.0
    jpeg_views: float = 0.0
    jpeg_on_views: float = 0.0
    view_shift: int = 0
    recon: float = 0.0
    outlier_exposure: float = 0.0
    outlier_paste: float = 0.0
    input_gradient: float = 0.0
    contrastive: float = 0.0
    balanced: bool = False
    dice: float = 0.0
    focal: float = 0.0
    average_epochs: int = 0

    def __post_init__(self):
        if not 0 <= self.average_epochs <= self.epochs:
            raise SegcheckError(
                f"average_epochs (--average-epochs) is {self.average_epochs!r}; give how many of the last of the "
                f"{self.epochs} epochs to average, 0 to {self.epochs}"
            )
        for name, flag in (("jpeg_views", "--jpeg-views"), ("jpeg_on_views", "--jpeg-on-views")):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise SegcheckError(
                    f"{name} ({flag}) is {share!r}, outside its range [0, 1]; give the share of "
                    "photometric-consistency views to make JPEG round trips, e.g. 0.5"
                )
        if self.view_shift < 0:
            raise SegcheckError(
                f"view_shift (--view-shift) is {self.view_shift!r}; give the largest translation in pixels, e.g. 16"
            )
        for name in ("jpeg_views", "jpeg_on_views", "view_shift"):
            if getattr(self, name) and not self.photometric_consistency:
                raise SegcheckError(
                    f"{name} shapes the photometric-consistency views, but photometric_consistency is 0; "
                    "give it a weight (--photometric-consistency W)"
                )

    def to_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes) -> Recipe:
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise SegcheckError(f"unknown recipe settings {sorted(unknown)}; known: {sorted(asdict(self))}")
        return replace(self, **changes)


RECIPES = {
    "naive": Recipe("naive"),
    "robust": Recipe("robust", flips=True, rolls=True, photometric=True, outlier_paste=0.03),
    # binary (prompted) models: plain BCE, the field report's collapse to background; focal; weighted BCE + Dice
    "naive-binary": Recipe("naive-binary"),
    "focal-binary": Recipe("focal-binary", focal=2.0),
    "robust-binary": Recipe("robust-binary", balanced=True, dice=1.0),
}


def get(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise SegcheckError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}") from None
