"""Public inference API: ``medvlsm_jax.load(folder)`` -> :class:`Segmenter`.

A folder is what ``medvlsm-convert`` (or the trainer's export) writes: ``model.json`` naming the
family, its config and its resolved input contract, Orbax ``params/`` and ``tokenizer/``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from medvlsm_jax import weights
from medvlsm_jax.data.preprocessing import make_tokenizer, normalize, resize_image
from medvlsm_jax.models import registry
from medvlsm_jax.models.contract import InputContract
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

    def __init__(self, model: nnx.Module, family: str, tokenizer: Any, contract: InputContract,
                 threshold: float):
        self.model = model
        self.family = family
        self.tokenizer = tokenizer
        self.contract = contract
        self.threshold = threshold
        graphdef, state = nnx.split(model)

        @jax.jit
        def _forward(state, inputs):
            return nnx.merge(graphdef, state)(**inputs)

        self._state = state
        self._forward = _forward

    @property
    def takes_text(self) -> bool:
        """Whether the model is conditioned on a prompt (its contract has a text spec)."""
        return self.contract.text is not None

    def tokenize(self, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        return self.tokenizer(list(prompts))

    def logits(self, pixel_values, input_ids=None, attention_mask=None) -> jax.Array:
        """(B, H, W) float32 logits for normalised NHWC ``pixel_values`` (and token ids for
        text models; image-only models take none)."""
        inputs = {"pixel_values": jnp.asarray(pixel_values, jnp.float32)}
        if not self.takes_text and (input_ids is not None or attention_mask is not None):
            raise ValueError(f"{self.family} is an image-only model: it takes no input_ids/attention_mask")
        if self.takes_text:
            if input_ids is None:
                raise ValueError(f"{self.family} is a text-conditioned model: pass input_ids")
            inputs["input_ids"] = jnp.asarray(input_ids, jnp.int32)
            inputs["attention_mask"] = (jnp.ones_like(inputs["input_ids"]) if attention_mask is None
                                        else jnp.asarray(attention_mask, jnp.int32))
        return self._forward(self._state, inputs)

    def preprocess(self, images: Sequence[ImageLike]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        spec = self.contract
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
        pixels, sizes = self.preprocess(images)
        if not self.takes_text:
            if prompts is not None:
                raise ValueError(f"{self.family} is an image-only model: it takes no prompts")
            probs = jax.nn.sigmoid(self.logits(pixels))
        else:
            if prompts is None:
                raise ValueError(f"{self.family} is a text-conditioned model: pass prompts")
            prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
            if len(prompts) != len(images):
                raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
            tok = self.tokenize(prompts)
            probs = jax.nn.sigmoid(self.logits(pixels, tok["input_ids"], tok["attention_mask"]))
        thr = self.threshold if threshold is None else threshold
        masks = []
        for p, size in zip(probs, sizes):
            full = resize(p[None, ..., None], size, method="bilinear")[0, ..., 0]
            masks.append(np.asarray(full > thr))
        return masks[0] if single else masks


def _materialise_rngs(model: nnx.Module) -> None:
    """``eval_shape`` leaves the RNG streams of dropout layers abstract; inference never draws from
    them, but jit needs arrays."""
    def concrete(x):
        if not isinstance(x, jax.ShapeDtypeStruct):
            return x
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.split(jax.random.key(0), x.shape) if x.shape else jax.random.key(0)
        return jnp.zeros(x.shape, x.dtype)

    nnx.update(model, jax.tree.map(concrete, nnx.state(model, nnx.RngState)))


def load(checkpoint_dir: str | os.PathLike) -> Segmenter:
    """Loads a converted or trained model folder (see :mod:`medvlsm_jax.weights`)."""
    checkpoint_dir = os.fspath(checkpoint_dir)
    meta = weights.read_model_json(checkpoint_dir)
    family = meta["family"]
    spec = registry.get_spec(family)
    config = registry.config_from_dict(family, meta["config"])
    model = nnx.eval_shape(lambda: spec.build(config, nnx.Rngs(0)))
    weights.restore_params(checkpoint_dir, model)
    _materialise_rngs(model)
    model.eval()
    tok_dir = os.path.join(checkpoint_dir, weights.TOKENIZER_DIR)
    vocab = tok_dir if os.path.isdir(tok_dir) else None
    if "contract" in meta:  # the contract the model was converted or trained with
        contract = InputContract.from_dict(meta["contract"])
        if contract.text is not None and vocab:
            contract = dataclasses.replace(contract, text=dataclasses.replace(contract.text, vocab=vocab))
    else:  # folders written before contracts were recorded: the family's, at the trained size
        contract = spec.resolve_contract(config, meta.get("image_size"), vocab=vocab)
    tokenizer = make_tokenizer(contract.text) if contract.text is not None else None
    return Segmenter(model, family, tokenizer, contract, threshold=meta.get("threshold", spec.threshold))
