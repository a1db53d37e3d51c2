"""TFDS builder for ``etis_polyp`` (medvlsm layout; see :mod:`medvlsm_jax.data.registry`)."""

from medvlsm_jax.data.builders.base import MedvlsmBuilder


class EtisPolyp(MedvlsmBuilder):
    """ETIS-LaribPolypDB polyps (test only: train.json + test.json)."""

    name = "etis_polyp"
