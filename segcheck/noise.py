"""Noise in place of the eval images, as noise_input draws it (its figures draw the same)."""

from __future__ import annotations

from collections import deque

import numpy as np

from segcheck import perturb


def noise_images(target, seed: int):
    """``(kind, batches)`` for each of :data:`perturb.NOISE_KINDS`: noise of the eval images'
    shape, drawn kind after kind, batch after batch, from one generator seeded with ``seed``
    (what noise_input scores). A kind's batches left unread when the next kind is asked for are
    drawn then, so every kind starts where the whole draw puts it."""
    images, model = target.data.images, target.model
    rng = np.random.default_rng(seed)
    stats = target.model.memo(
        "channel statistics", target.data, lambda: perturb.channel_statistics(images, target.data.batch_size)
    )
    normalization = model.mean.cpu().numpy().ravel(), model.std.cpu().numpy().ravel()
    for kind in perturb.NOISE_KINDS:
        batches = perturb.noise_batches(kind, images.shape, *normalization, rng, target.data.batch_size, **stats)
        yield kind, batches
        deque(batches, maxlen=0)  # the draws the consumer did not read
