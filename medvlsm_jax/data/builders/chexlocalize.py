"""TFDS builder for ``chexlocalize`` (medvlsm layout; see :mod:`medvlsm_jax.data.registry`)."""

from medvlsm_jax.data.builders.base import MedvlsmBuilder


class Chexlocalize(MedvlsmBuilder):
    """CheXlocalize chest X-rays (train/val/test)."""

    name = "chexlocalize"
