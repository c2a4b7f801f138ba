"""Serving latent maps: the test-set posterior means a 2-D VAE's checkpoint keeps beside its weights.

`models.latent_map` computes them (`python -m models.latent_map NAME --data-dir MNIST`); this module,
part of the service layer (`Service.vae_latent_map`), reads the file of a served model, refusing a model
that has none, whose latent space is not 2-D, or whose map was computed with other weights than those
served (its points would be wrong).
"""

from __future__ import annotations

from app.engine.models.catalogue import ModelEntry
from app.errors import NotFound, TaskNotSupported
from models.latent_map import LatentMap, LatentMapError, read_latent_map


def served_latent_map(entry: ModelEntry) -> LatentMap:
    """The latent map of `entry` (blocking: reads a file; call it from a worker thread)."""
    card = entry.card
    assert card is not None, "ModelChoice never hands out an entry without a card"
    if card.latent_size != 2:
        raise TaskNotSupported(
            f"a latent map needs a 2-D latent space; model {entry.name!r} has {card.latent_size} dimensions",
            param="model",
        )
    how_to_make = f"make one with: python -m models.latent_map {entry.name} --data-dir MNIST_DIR"
    try:
        latent_map = read_latent_map(entry.directory)
    except LatentMapError as exc:
        raise NotFound(f"model {entry.name!r} has no latent map ({exc}); {how_to_make}", param="model") from None
    if latent_map.weights_sha256 != card.weights_sha256:
        raise NotFound(
            f"the latent map of model {entry.name!r} was computed with other weights than those served; {how_to_make}",
            param="model",
        )
    return latent_map
