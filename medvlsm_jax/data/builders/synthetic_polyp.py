"""TFDS builder for ``synthetic_polyp``: generated into the manual dir, then built like the real sets."""

from medvlsm_jax.data.builders.synthetic import SyntheticBuilder


class SyntheticPolyp(SyntheticBuilder):
    """Procedural RGB polyp-like images with 0-3 lesions and prompts p0..p9."""

    name = "synthetic_polyp"
