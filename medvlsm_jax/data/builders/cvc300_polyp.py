"""TFDS builder for ``cvc300_polyp`` (medvlsm layout; see :mod:`medvlsm_jax.data.registry`)."""

from medvlsm_jax.data.builders.base import MedvlsmBuilder


class Cvc300Polyp(MedvlsmBuilder):
    """CVC-300 polyps (test only: train.json + test.json).

    The released annotation files are ColonDB's; building warns about it
    (:class:`~medvlsm_jax.data.errors.DuplicateAnnotationsWarning`)."""

    name = "cvc300_polyp"
