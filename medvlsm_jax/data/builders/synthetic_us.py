"""TFDS builder for ``synthetic_us``: generated into the manual dir, then built like the real sets."""

from medvlsm_jax.data.builders.synthetic import SyntheticBuilder


class SyntheticUs(SyntheticBuilder):
    """Procedural grayscale ultrasound-like images with 0-3 lesions and prompts p0..p6 (BUSI schema)."""

    name = "synthetic_us"
