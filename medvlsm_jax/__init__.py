"""medvlsm-jax: JAX/Flax benchmark suite for medical vision-language segmentation."""

__version__ = "0.1.0"


def load(checkpoint_dir):
    """Loads a converted or trained model folder; returns a :class:`medvlsm_jax.api.Segmenter`."""
    from medvlsm_jax.api import load as _load

    return _load(checkpoint_dir)


__all__ = ["load", "__version__"]
