"""TFDS builder for ``dfu`` (medvlsm layout; see :mod:`medvlsm_jax.data.registry`)."""

from medvlsm_jax.data.builders.base import MedvlsmBuilder


class Dfu(MedvlsmBuilder):
    """DFU 2022 diabetic foot ulcers (train/val/test)."""

    name = "dfu"
