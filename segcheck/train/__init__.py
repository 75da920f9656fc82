"""The bundled trainer: ``segcheck train`` and ``segcheck.train.train``."""

from segcheck.train.recipes import RECIPES, Recipe
from segcheck.train.trainer import TrainResult, train

__all__ = ["RECIPES", "Recipe", "TrainResult", "train"]
