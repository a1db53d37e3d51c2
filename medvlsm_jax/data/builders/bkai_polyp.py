"""TFDS builder for ``bkai_polyp`` (medvlsm layout; see :mod:`medvlsm_jax.data.registry`)."""

from medvlsm_jax.data.builders.base import MedvlsmBuilder


class BkaiPolyp(MedvlsmBuilder):
    """BKAI-IGH NeoPolyp polyps (train/val/test)."""

    name = "bkai_polyp"
