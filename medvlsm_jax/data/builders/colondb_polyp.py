"""TFDS builder for ``colondb_polyp`` (medvlsm layout; see :mod:`medvlsm_jax.data.registry`)."""

from medvlsm_jax.data.builders.base import MedvlsmBuilder


class ColondbPolyp(MedvlsmBuilder):
    """CVC-ColonDB polyps (test only: train.json + test.json)."""

    name = "colondb_polyp"
