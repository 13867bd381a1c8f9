"""Flax classifiers: each maps an input batch to float32 logits ``[batch, num_classes]``."""

from gence_jax.models.mlp import MLP

__all__ = ["MLP"]
