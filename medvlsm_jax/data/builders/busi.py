"""TFDS builder for ``busi`` (medvlsm layout; see :mod:`medvlsm_jax.data.registry`)."""

from medvlsm_jax.data.builders.base import MedvlsmBuilder


class Busi(MedvlsmBuilder):
    """BUSI breast ultrasound (train/val/test); normal cases have empty masks."""

    name = "busi"
