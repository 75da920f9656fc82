"""The bundled trainer: ``segcheck train`` and ``segcheck.train.train``."""

from segcheck.train.loop import TrainResult, train
from segcheck.train.recipes import RECIPES, Recipe

__all__ = ["RECIPES", "Recipe", "TrainResult", "train"]
