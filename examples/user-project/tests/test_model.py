"""mypkg's own tests: segcheck's gates on our model, one call each (segcheck.check)."""

import numpy as np
import segcheck

from mypkg.data import CLASSES, MEAN, STD, Terrain
from mypkg.models import build, trained


def eval_sample(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` maps of the val split: images (n, 64, 64, 3) uint8, masks (n, 64, 64)."""
    val = Terrain("val")
    images, masks = zip(*(val[i] for i in range(n)), strict=True)
    return np.stack(images), np.stack(masks)


def test_the_shipped_model_passes_the_quick_gates():
    """Every gate of segcheck's gates suite but those that train: the splits let positional_prior,
    generalization and label_integrity read the training and test maps."""
    result = segcheck.check(
        trained(),
        *eval_sample(),
        classes=CLASSES,
        mean=MEAN,
        std=STD,
        splits={"train": Terrain("train"), "test": Terrain("test")},
        device="cpu",
    )
    print(result)
    result.assert_passed()
    assert result.get("noise_input").value < 0.10


def test_an_untrained_model_is_caught():
    result = segcheck.check(
        build(len(CLASSES)), *eval_sample(), classes=CLASSES, mean=MEAN, std=STD, gates=["prediction_collapse"]
    )
    assert not result.passed and result.get("prediction_collapse").outcome == "failed"
