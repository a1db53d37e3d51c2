"""Public inference API: ``medvlsm_jax.load(folder)`` -> :class:`Segmenter`.

A folder is what ``medvlsm-convert`` (or the trainer's export) writes: ``model.json`` naming the
family and its config, Orbax ``params/`` and ``tokenizer/``.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from medvlsm_jax import weights
from medvlsm_jax.data.preprocessing import PreprocessSpec, make_tokenizer, normalize, resize_image
from medvlsm_jax.models import registry
from medvlsm_jax.ops.resize import resize

__all__ = ["Segmenter", "load"]

ImageLike = Image.Image | np.ndarray | str | os.PathLike


def _as_rgb(image: ImageLike) -> Image.Image:
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as im:
            return im.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.dtype != np.uint8:
            raise TypeError(f"numpy images must be uint8 (H, W[, C]), got {image.dtype}")
        return Image.fromarray(image[..., :3])
    return image.convert("RGB")


class Segmenter:
    """A model with its tokenizer and preprocessing.

    * :meth:`logits` — the raw network: normalised NHWC pixels and token ids in, (B, H, W) out;
    * :meth:`predict` — images (PIL, uint8 arrays or paths) and prompts in, one boolean mask per
      image at its original size out (resize as torchvision on PIL, sigmoid, bilinear back to the
      original size, threshold).
    """

    def __init__(self, model: nnx.Module, family: str, tokenizer: Any, preprocessing: PreprocessSpec,
                 threshold: float):
        self.model = model
        self.family = family
        self.tokenizer = tokenizer
        self.preprocessing = preprocessing
        self.threshold = threshold
        graphdef, state = nnx.split(model)

        @jax.jit
        def _forward(state, inputs):
            return nnx.merge(graphdef, state)(**inputs)

        self._state = state
        self._forward = _forward

    @property
    def takes_text(self) -> bool:
        """False for image-only models (the CNN baselines): no tokenizer, no prompts."""
        return self.preprocessing.text is not None

    def tokenize(self, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        return self.tokenizer(list(prompts))

    def logits(self, pixel_values, input_ids=None, attention_mask=None) -> jax.Array:
        """(B, H, W) float32 logits for normalised NHWC ``pixel_values`` (and token ids unless the
        model is image-only)."""
        inputs = {"pixel_values": jnp.asarray(pixel_values, jnp.float32)}
        if not self.takes_text:
            if input_ids is not None or attention_mask is not None:
                raise ValueError(f"{self.family} is an image-only model: it takes no input_ids/attention_mask")
            return self._forward(self._state, inputs)
        if input_ids is None:
            raise ValueError(f"{self.family} needs input_ids (tokenize the prompts)")
        input_ids = jnp.asarray(input_ids, jnp.int32)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        inputs.update(input_ids=input_ids, attention_mask=jnp.asarray(attention_mask, jnp.int32))
        return self._forward(self._state, inputs)

    def preprocess(self, images: Sequence[ImageLike]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        spec = self.preprocessing
        pils = [_as_rgb(im) for im in images]
        sizes = [(im.height, im.width) for im in pils]
        pixels = np.stack([normalize(resize_image(im, spec.image_size), spec.mean, spec.std) for im in pils])
        return pixels, sizes

    def predict(self, images: ImageLike | Sequence[ImageLike], prompts: str | Sequence[str] | None = None,
                threshold: float | None = None) -> list[np.ndarray] | np.ndarray:
        """One boolean mask (H, W) per image, at the image's original size (a single image in, a
        single mask out). Image-only models take no prompts."""
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        if not self.takes_text:
            if prompts is not None:
                raise ValueError(f"{self.family} is an image-only model: it takes no prompts")
            pixels, sizes = self.preprocess(images)
            probs = jax.nn.sigmoid(self.logits(pixels))
        else:
            if prompts is None:
                raise ValueError(f"{self.family} needs a prompt per image")
            prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
            if len(prompts) != len(images):
                raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
            pixels, sizes = self.preprocess(images)
            tok = self.tokenize(prompts)
            probs = jax.nn.sigmoid(self.logits(pixels, tok["input_ids"], tok["attention_mask"]))
        thr = self.threshold if threshold is None else threshold
        masks = []
        for p, size in zip(probs, sizes):
            full = resize(p[None, ..., None], size, method="bilinear")[0, ..., 0]
            masks.append(np.asarray(full > thr))
        return masks[0] if single else masks


def _concrete_rng_state(model: nnx.Module, seed: int = 0) -> None:
    """``nnx.eval_shape`` leaves RNG streams (dropout) abstract; give them a concrete key so the
    loaded model also works under ``nnx.jit`` and in train mode."""

    def concrete(x):
        if not isinstance(x, jax.ShapeDtypeStruct):
            return x
        return jax.random.key(seed) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else jnp.zeros(x.shape, x.dtype)

    abstract = lambda x: isinstance(x, jax.ShapeDtypeStruct)  # noqa: E731
    nnx.update(model, jax.tree.map(concrete, nnx.state(model, nnx.RngState), is_leaf=abstract))


def load(checkpoint_dir: str | os.PathLike) -> Segmenter:
    """Loads a converted or trained model folder (see :mod:`medvlsm_jax.weights`)."""
    checkpoint_dir = os.fspath(checkpoint_dir)
    meta = weights.read_model_json(checkpoint_dir)
    family = meta["family"]
    spec = registry.get_spec(family)
    config = registry.config_from_dict(family, meta["config"])
    model = nnx.eval_shape(lambda: spec.build(config, nnx.Rngs(0)))
    weights.restore_params(checkpoint_dir, model)
    _concrete_rng_state(model)
    model.eval()
    # a model trained at another resolution records it in model.json
    pre = spec.preprocessing_for(config, meta.get("image_size"))
    tok_dir = os.path.join(checkpoint_dir, weights.TOKENIZER_DIR)
    if pre.text is None:  # image-only model
        tokenizer = None
    elif os.path.isdir(tok_dir) and spec.tokenizer == "clip":
        from medvlsm_jax.data.tokenizers import ClipTokenizer

        tokenizer = ClipTokenizer.from_dir(tok_dir)
    else:
        tokenizer = make_tokenizer(pre.text)
    return Segmenter(model, family, tokenizer, pre, threshold=meta.get("threshold", spec.threshold))
