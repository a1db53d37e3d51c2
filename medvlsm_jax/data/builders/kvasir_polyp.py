"""TFDS builder for ``kvasir_polyp`` (medvlsm layout; see :mod:`medvlsm_jax.data.registry`)."""

from medvlsm_jax.data.builders.base import MedvlsmBuilder


class KvasirPolyp(MedvlsmBuilder):
    """Kvasir-SEG polyps (train/val/test)."""

    name = "kvasir_polyp"
