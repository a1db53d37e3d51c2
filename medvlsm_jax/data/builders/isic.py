"""TFDS builder for ``isic`` (medvlsm layout; see :mod:`medvlsm_jax.data.registry`)."""

from medvlsm_jax.data.builders.base import MedvlsmBuilder


class Isic(MedvlsmBuilder):
    """ISIC 2016 skin lesions (train/val/test)."""

    name = "isic"
