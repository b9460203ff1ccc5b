"""rzero_jax: JAX/TPU-native self-play reasoning training (R-Zero, Absolute Zero)."""

__version__ = "0.1.0"
