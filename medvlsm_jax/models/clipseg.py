"""CLIPSeg (Lüddecke & Ecker, 2022) in Flax NNX, weight-compatible with transformers'
``CLIPSegForImageSegmentation`` (e.g. ``CIDAS/clipseg-rd64-refined``).

Differences from the transformers model, none of which changes the logits:

* the vision tower is built and run only as deep as the deepest extracted activation (10 of 12
  blocks for rd64-refined); its post-norm, pooled projection and the unused blocks are dropped at
  conversion;
* non-square inputs work (the original reshapes the token grid with ``sqrt``); every multiple of
  the patch size is accepted, with position embeddings interpolated exactly as transformers does.

``encode`` returns the frozen CLIP outputs (the extracted activations and the conditional
embedding), ``decode`` the FiLM-conditioned decoder; paper-faithful training freezes ``clip``
exactly like the original, which runs both encoders under ``torch.no_grad``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from medvlsm_jax.models import clip as clip_lib
from medvlsm_jax.models.contract import IMAGENET_MEAN, IMAGENET_STD, InputContract, TextSpec
from medvlsm_jax.models.registry import ModelSpec, register

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class CLIPSegConfig:
    # vision tower (CLIP ViT-B/16)
    pretrain_image_size: int = 224  # the position grid is pretrain_image_size // patch_size
    patch_size: int = 16
    vision_hidden_size: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_intermediate_size: int = 3072
    # text tower
    vocab_size: int = 49408
    max_position_embeddings: int = 77
    text_hidden_size: int = 512
    text_layers: int = 12
    text_heads: int = 8
    text_intermediate_size: int = 2048
    eos_token_id: int = 2
    projection_dim: int = 512
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    # decoder
    extract_layers: tuple[int, ...] = (3, 6, 9)
    reduce_dim: int = 64
    decoder_heads: int = 4
    decoder_intermediate_size: int = 2048
    conditional_layer: int = 0
    use_complex_transposed_convolution: bool = True
    # computation dtype (the input size is the family's contract, not a model field)
    dtype: str = "float32"
    # speed switches (no effect on the weights or their layout): run the identical CLIP blocks as
    # one nnx.scan (XLA compiles one block per tower); attention "auto" = cuDNN flash attention
    # where it applies (bf16 on a GPU, unmasked), XLA elsewhere; "xla" always XLA
    scan_layers: bool = True
    attention: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def vision_depth(self) -> int:
        """Blocks actually run: up to the deepest extracted activation."""
        return max(self.extract_layers) + 1


def rd64_refined() -> CLIPSegConfig:
    """``CIDAS/clipseg-rd64-refined``."""
    return CLIPSegConfig()


def tiny() -> CLIPSegConfig:
    """A few-kilobyte variant with the same structure, for tests and the CPU demo."""
    return CLIPSegConfig(
        pretrain_image_size=64, patch_size=16, vision_hidden_size=32, vision_layers=5, vision_heads=2,
        vision_intermediate_size=64, text_hidden_size=32, text_layers=2, text_heads=2,
        text_intermediate_size=64, projection_dim=32, extract_layers=(1, 2, 3), reduce_dim=16,
        decoder_heads=2, decoder_intermediate_size=32,
    )


class CLIPSegDecoder(nnx.Module):
    def __init__(self, cfg: CLIPSegConfig, *, rngs: nnx.Rngs, dtype=None, attention: str | None = None):
        self.conditional_layer = cfg.conditional_layer
        rd = cfg.reduce_dim
        self.film_mul = nnx.Linear(cfg.projection_dim, rd, dtype=dtype, rngs=rngs)
        self.film_add = nnx.Linear(cfg.projection_dim, rd, dtype=dtype, rngs=rngs)
        p = cfg.patch_size
        if cfg.use_complex_transposed_convolution:  # torch nn.Sequential: ReLUs sit at indices 1 and 3
            k = p // 4
            self.transposed_convolution = nnx.List([
                nnx.Conv(rd, rd, (3, 3), padding=1, dtype=dtype, rngs=rngs),
                jax.nn.relu,
                nnx.ConvTranspose(rd, rd // 2, (k, k), strides=(k, k), padding="VALID", dtype=dtype, rngs=rngs),
                jax.nn.relu,
                nnx.ConvTranspose(rd // 2, 1, (k, k), strides=(k, k), padding="VALID", dtype=dtype, rngs=rngs),
            ])
        else:
            self.transposed_convolution = nnx.ConvTranspose(rd, 1, (p, p), strides=(p, p), padding="VALID",
                                                            dtype=dtype, rngs=rngs)
        n = len(cfg.extract_layers)
        self.reduces = nnx.List([nnx.Linear(cfg.vision_hidden_size, rd, dtype=dtype, rngs=rngs) for _ in range(n)])
        self.layers = nnx.List([
            clip_lib.EncoderLayer(rd, cfg.decoder_heads, cfg.decoder_intermediate_size, "relu", cfg.layer_norm_eps,
                                  post_norm=True, rngs=rngs, dtype=dtype, attention=attention)
            for _ in range(n)
        ])

    def __call__(self, activations: list[Array], conditional: Array, grid: tuple[int, int]) -> Array:
        """activations: the extracted hidden states (B, 1+h*w, D), shallowest first."""
        out = None
        for i, (act, reduce, layer) in enumerate(zip(activations[::-1], self.reduces, self.layers)):
            out = reduce(act) if out is None else reduce(act) + out
            if i == self.conditional_layer:  # FiLM
                out = self.film_mul(conditional)[:, None] * out + self.film_add(conditional)[:, None]
            out = layer(out)
        b = out.shape[0]
        x = out[:, 1:].reshape(b, grid[0], grid[1], -1)  # drop the class token, NHWC grid
        head = self.transposed_convolution
        for f in head if isinstance(head, nnx.List) else (head,):
            x = f(x)
        return x[..., 0]


class CLIPSegClip(nnx.Module):
    """The ``clip`` submodule: vision tower, text tower and the text projection."""

    def __init__(self, cfg: CLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        self.vision_model = clip_lib.VisionTransformer(
            dim=cfg.vision_hidden_size, depth=cfg.vision_depth, heads=cfg.vision_heads,
            mlp_dim=cfg.vision_intermediate_size, patch=cfg.patch_size, image_size=cfg.pretrain_image_size,
            act=cfg.hidden_act, eps=cfg.layer_norm_eps, rngs=rngs, dtype=dtype, scan=cfg.scan_layers,
            attention=cfg.attention,
        )
        self.text_model = clip_lib.TextTransformer(
            vocab=cfg.vocab_size, max_len=cfg.max_position_embeddings, dim=cfg.text_hidden_size,
            depth=cfg.text_layers, heads=cfg.text_heads, mlp_dim=cfg.text_intermediate_size, act=cfg.hidden_act,
            eps=cfg.layer_norm_eps, eos_token_id=cfg.eos_token_id, rngs=rngs, dtype=dtype, scan=cfg.scan_layers,
            attention=cfg.attention,
        )
        self.text_projection = nnx.Linear(cfg.text_hidden_size, cfg.projection_dim, use_bias=False, dtype=dtype,
                                          rngs=rngs)

    def get_text_features(self, input_ids: Array, attention_mask: Array | None = None) -> Array:
        _, pooled = self.text_model(input_ids, attention_mask)
        return self.text_projection(pooled)


class CLIPSeg(nnx.Module):
    """``CLIPSegForImageSegmentation``: ``clip`` + ``decoder``."""

    encoder_prefixes = ("clip",)

    def __init__(self, cfg: CLIPSegConfig, *, rngs: nnx.Rngs):
        if cfg.use_complex_transposed_convolution and (cfg.patch_size // 4) ** 2 != cfg.patch_size:
            raise ValueError(f"the complex transposed-convolution head upsamples by (patch_size // 4) ** 2 and "
                             f"needs patch_size 16, got {cfg.patch_size}; use "
                             "use_complex_transposed_convolution=False")
        if cfg.vision_depth > cfg.vision_layers:
            raise ValueError(f"extract_layers {cfg.extract_layers} go deeper than {cfg.vision_layers} vision layers")
        self.config = cfg
        dtype = jnp.dtype(cfg.dtype)
        self.clip = CLIPSegClip(cfg, rngs=rngs, dtype=dtype)
        self.decoder = CLIPSegDecoder(cfg, rngs=rngs, dtype=dtype, attention=cfg.attention)

    def encode(self, pixel_values: Array, input_ids: Array, attention_mask: Array | None = None) -> dict[str, Any]:
        """The frozen part: extracted activations (shallowest first) and the conditional embedding."""
        acts, _ = self.clip.vision_model(pixel_values, collect=tuple(self.config.extract_layers))
        cond = self.clip.get_text_features(input_ids, attention_mask)
        return {"activations": acts, "conditional": cond}

    def decode(self, features: dict[str, Any]) -> Array:
        acts = features["activations"]
        n = acts[0].shape[1] - 1
        grid = features.get("grid")
        if grid is None:
            side = int(round(n ** 0.5))
            if side * side != n:
                raise ValueError("non-square token grids need features['grid'] = (h, w)")
            grid = (side, side)
        logits = self.decoder(acts, features["conditional"], tuple(grid))
        return logits.astype(jnp.float32)

    def __call__(self, pixel_values: Array, input_ids: Array, attention_mask: Array | None = None) -> Array:
        """pixel_values (B, H, W, 3) normalised NHWC -> logits (B, H, W)."""
        feats = self.encode(pixel_values, input_ids, attention_mask)
        p = self.config.patch_size
        feats["grid"] = (pixel_values.shape[1] // p, pixel_values.shape[2] // p)
        return self.decode(feats)


def input_contract(cfg: CLIPSegConfig) -> InputContract:
    """medvlsm's CLIPSeg inputs: 352² (``CIDAS/clipseg-rd64-refined``'s processor), ImageNet
    mean/std, CLIP BPE with the text tower's 77 positions."""
    return InputContract((352, 352), IMAGENET_MEAN, IMAGENET_STD, TextSpec("clip", cfg.max_position_embeddings))


SPEC = register(ModelSpec(
    name="clipseg",
    config_cls=CLIPSegConfig,
    build=lambda cfg, rngs: CLIPSeg(cfg, rngs=rngs),
    variants={"base": rd64_refined, "rd64-refined": rd64_refined, "tiny": tiny},
    contract=input_contract,
    threshold=0.5,
    legacy_keys={"image_size": "pretrain_image_size", "input_size": None},
))
