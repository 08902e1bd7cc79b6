"""Losses, one file per kind, all registered in :data:`samdistill.losses.registry.LOSSES`."""

from samdistill.losses.registry import LOSSES

from samdistill.losses import embedding, kd, perceptual, saliency, segmentation, semi  # noqa: F401,E402  (registration)

__all__ = ["LOSSES"]
