"""TFDS builder for ``camus`` (medvlsm layout; see :mod:`medvlsm_jax.data.registry`)."""

from medvlsm_jax.data.builders.base import MedvlsmBuilder


class Camus(MedvlsmBuilder):
    """CAMUS echocardiography (val/test; train when anns/train.json exists).

    Val images are read from images/train, test images from images/test."""

    name = "camus"
