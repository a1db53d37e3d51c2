"""CLIP transformer towers in the Hugging Face layout (``CLIPSegModel``/``CLIPModel`` names).

Attribute names mirror the transformers state dict (``embeddings.patch_embedding``,
``encoder.layers.N.self_attn.q_proj``, ``pre_layrnorm`` — sic — ...) so that conversion is the
generic rule set of :mod:`medvlsm_jax.conversion.rules`. All inputs are NHWC.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from medvlsm_jax.ops import scan as scan_lib
from medvlsm_jax.ops.resize import resize

Array = jax.Array


def quick_gelu(x: Array) -> Array:
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "quick_gelu": quick_gelu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
}


ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn", "auto")


def _cudnn_supported(q: Array, mask: Array | None) -> bool:
    """Whether cuDNN flash attention applies: a GPU, half-precision inputs, no explicit mask and a
    head size it accepts (a multiple of 8, at most 128)."""
    head = q.shape[-1]
    return (jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16) and mask is None
            and head % 8 == 0 and head <= 128)


def attention(q: Array, k: Array, v: Array, mask: Array | None = None, implementation: str | None = None) -> Array:
    """``jax.nn.dot_product_attention`` over (B, T, heads, head_dim). ``implementation``:
    ``xla`` (or None) always; ``cudnn`` / ``auto``: cuDNN flash attention where it applies
    (:func:`_cudnn_supported`; bf16 on a GPU), XLA elsewhere (CPU, fp32, masked attention)."""
    if implementation not in (None, *ATTENTION_IMPLEMENTATIONS):
        raise ValueError(f"attention implementation {implementation!r}; choose from "
                         f"{', '.join(ATTENTION_IMPLEMENTATIONS)}")
    if implementation in ("cudnn", "auto") and _cudnn_supported(q, mask):
        try:
            return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
        except (RuntimeError, ValueError, NotImplementedError):  # this cuDNN rejects the shape
            pass
    return jax.nn.dot_product_attention(q, k, v, mask=mask)


class Attention(nnx.Module):
    """Multi-head self-attention with separate q/k/v/out projections (HF ``CLIPAttention``)."""

    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs, dtype=None, implementation: str | None = None):
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        if implementation not in (None, *ATTENTION_IMPLEMENTATIONS):
            raise ValueError(f"attention={implementation!r}; choose from {', '.join(ATTENTION_IMPLEMENTATIONS)}")
        self.heads = heads
        self.implementation = implementation
        lin = lambda: nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)  # noqa: E731
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = lin(), lin(), lin(), lin()

    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        """x: (B, T, D); mask: bool, broadcastable to (B, heads, T, T), True = attend."""
        b, t, d = x.shape
        split = lambda y: y.reshape(b, t, self.heads, d // self.heads)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        out = attention(q, k, v, mask, self.implementation)
        return self.out_proj(out.reshape(b, t, d))


class MLP(nnx.Module):
    def __init__(self, dim: int, hidden: int, act: str, *, rngs: nnx.Rngs, dtype=None):
        self.act = ACTIVATIONS[act]
        self.fc1 = nnx.Linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nnx.Module):
    """Transformer block. ``post_norm=False``: CLIP's pre-norm block; ``True``: CLIPSeg's decoder
    block, which normalises after each residual sum."""

    def __init__(self, dim, heads, mlp_dim, act, eps, *, post_norm=False, rngs, dtype=None, attention=None):
        self.post_norm = post_norm
        self.self_attn = Attention(dim, heads, rngs=rngs, dtype=dtype, implementation=attention)
        self.layer_norm1 = nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, rngs=rngs)
        self.mlp = MLP(dim, mlp_dim, act, rngs=rngs, dtype=dtype)
        self.layer_norm2 = nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        if self.post_norm:
            x = self.layer_norm1(x + self.self_attn(x, mask))
            return self.layer_norm2(x + self.mlp(x))
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nnx.Module):
    """``depth`` identical blocks. With ``scan`` (default) they are one stacked block run by
    ``nnx.scan`` (:mod:`medvlsm_jax.ops.scan`: XLA compiles the block once); the parameters are
    still read and written per block (``layers.N.*``) by conversion and model folders."""

    def __init__(self, depth, dim, heads, mlp_dim, act, eps, *, rngs, dtype=None, scan=True, attention=None):
        blocks = [EncoderLayer(dim, heads, mlp_dim, act, eps, rngs=rngs, dtype=dtype, attention=attention)
                  for _ in range(depth)]  # initialised one after another: the same numbers either way
        self.depth = depth
        self.scan = bool(scan) and depth > 1
        self.layers = scan_lib.stack_modules(blocks) if self.scan else nnx.List(blocks)

    def __call__(self, x: Array, mask: Array | None = None, *, collect: tuple[int, ...] = ()) -> tuple[Array, list]:
        """Runs every block; returns the last output and the outputs of the blocks in ``collect``."""
        if self.scan:
            x, outs = scan_lib.scan_blocks(self.layers, x, mask, keep=bool(collect))
            return x, [outs[i] for i in collect]
        taps = []
        for i, layer in enumerate(self.layers):
            x = layer(x, mask)
            if i in collect:
                taps.append(x)
        return x, taps


class VisionEmbeddings(nnx.Module):
    def __init__(self, dim: int, patch: int, image_size: int, *, rngs: nnx.Rngs, dtype=None):
        self.patch = patch
        self.grid = image_size // patch
        init = nnx.initializers.normal(0.02)
        self.class_embedding = nnx.Param(init(rngs.params(), (dim,)))
        self.patch_embedding = nnx.Conv(
            3, dim, (patch, patch), strides=(patch, patch), padding="VALID", use_bias=False, dtype=dtype, rngs=rngs
        )
        self.position_embedding = nnx.Embed(self.grid * self.grid + 1, dim, rngs=rngs)

    def position_table(self, h: int, w: int) -> Array:
        """(1 + h*w, D) position embeddings for an (h, w) patch grid.

        As transformers' ``interpolate_pos_encoding``: the pretraining grid is resized with
        torch-exact bicubic (a=-0.75, align_corners=False, no antialias); the class position is kept.
        """
        table = self.position_embedding.embedding[...]
        if (h, w) == (self.grid, self.grid):
            return table
        cls, grid = table[:1], table[1:].reshape(self.grid, self.grid, -1)
        grid = resize(grid, (h, w), axes=(0, 1), method="bicubic")
        return jnp.concatenate([cls, grid.reshape(h * w, -1)], axis=0)

    def __call__(self, pixel_values: Array) -> Array:
        b, hh, ww, _ = pixel_values.shape
        if hh % self.patch or ww % self.patch:
            raise ValueError(f"image size {hh}x{ww} is not a multiple of the patch size {self.patch}")
        x = self.patch_embedding(pixel_values)  # (B, h, w, D)
        h, w = x.shape[1:3]
        x = x.reshape(b, h * w, -1)
        cls = jnp.broadcast_to(self.class_embedding[...].astype(x.dtype), (b, 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1)
        return x + self.position_table(h, w).astype(x.dtype)


class VisionTransformer(nnx.Module):
    """HF ``CLIPVisionTransformer`` truncated to ``depth`` blocks (no post-norm / pooling: CLIPSeg
    uses only intermediate activations)."""

    def __init__(self, *, dim, depth, heads, mlp_dim, patch, image_size, act, eps, rngs, dtype=None, scan=True,
                 attention=None):
        self.embeddings = VisionEmbeddings(dim, patch, image_size, rngs=rngs, dtype=dtype)
        self.pre_layrnorm = nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, rngs=rngs)
        self.encoder = Encoder(depth, dim, heads, mlp_dim, act, eps, rngs=rngs, dtype=dtype, scan=scan,
                               attention=attention)

    def __call__(self, pixel_values: Array, collect: tuple[int, ...]) -> tuple[list[Array], tuple[int, int]]:
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        _, taps = self.encoder(x, collect=collect)
        grid = (pixel_values.shape[1] // self.embeddings.patch, pixel_values.shape[2] // self.embeddings.patch)
        return taps, grid


class TextEmbeddings(nnx.Module):
    def __init__(self, vocab: int, max_len: int, dim: int, *, rngs: nnx.Rngs):
        self.token_embedding = nnx.Embed(vocab, dim, rngs=rngs)
        self.position_embedding = nnx.Embed(max_len, dim, rngs=rngs)

    def __call__(self, input_ids: Array) -> Array:
        t = input_ids.shape[-1]
        if t > self.position_embedding.num_embeddings:
            raise ValueError(f"sequence length {t} exceeds {self.position_embedding.num_embeddings} positions")
        return self.token_embedding(input_ids) + self.position_embedding.embedding[:t]


class TextTransformer(nnx.Module):
    """HF ``CLIPTextTransformer``: causal blocks, final LayerNorm, pooled EOS feature."""

    def __init__(self, *, vocab, max_len, dim, depth, heads, mlp_dim, act, eps, eos_token_id, rngs, dtype=None,
                 scan=True, attention=None):
        self.eos_token_id = eos_token_id
        self.embeddings = TextEmbeddings(vocab, max_len, dim, rngs=rngs)
        self.encoder = Encoder(depth, dim, heads, mlp_dim, act, eps, rngs=rngs, dtype=dtype, scan=scan,
                               attention=attention)
        self.final_layer_norm = nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, rngs=rngs)

    def __call__(self, input_ids: Array, attention_mask: Array | None = None) -> tuple[Array, Array]:
        """Returns (last hidden states (B, T, D), pooled EOS features (B, D))."""
        t = input_ids.shape[-1]
        mask = jnp.tril(jnp.ones((t, t), dtype=bool))[None, None]
        if attention_mask is not None:
            mask = mask & (attention_mask[:, None, None, :] > 0)
        x, _ = self.encoder(self.embeddings(input_ids), mask)
        x = self.final_layer_norm(x)
        if self.eos_token_id == 2:
            # checkpoints from before transformers PR #24773 (e.g. CIDAS/clipseg-rd64-refined):
            # the EOS token is the highest id of each sequence.
            pos = jnp.argmax(input_ids, axis=-1)
        else:  # first occurrence of the EOS id (padding may use the same id)
            pos = jnp.argmax((input_ids == self.eos_token_id).astype(jnp.int32), axis=-1)
        pooled = jnp.take_along_axis(x, pos[:, None, None], axis=1)[:, 0]
        return x, pooled
