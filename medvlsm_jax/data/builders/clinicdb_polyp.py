"""TFDS builder for ``clinicdb_polyp`` (medvlsm layout; see :mod:`medvlsm_jax.data.registry`)."""

from medvlsm_jax.data.builders.base import MedvlsmBuilder


class ClinicdbPolyp(MedvlsmBuilder):
    """CVC-ClinicDB polyps (train/val/test)."""

    name = "clinicdb_polyp"
