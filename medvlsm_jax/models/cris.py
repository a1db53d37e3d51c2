"""CRIS (Wang et al., CVPR 2022) with a CLIP RN50 backbone, in Flax NNX, as medvlsm runs it.

A weight-compatible port of ``DerrickWang005/CRIS.pytorch`` (``model/clip.py``, ``model/layers.py``,
``model/segmenter.py``; medvlsm's copy in ``src/models/cris_model`` is the same code). Every
submodule carries the name of its PyTorch counterpart, so ``medvlsm_jax.conversion.rules`` maps the
state dict key for key (only the fused ``in_proj`` of ``nn.MultiheadAttention`` is split).

Layout: images are NHWC here (PyTorch: NCHW); the decoder works batch-first (PyTorch: sequence
first). Numerics follow PyTorch: LayerNorm/BatchNorm eps 1e-5, exact (two-pass) variances,
torch's bicubic (a=-0.75) and bilinear resizing, ``-inf``-like masking.

Pieces:

* ``backbone``: CLIP. ``visual`` is the ModifiedResNet (3-conv stem, avg-pool anti-aliased
  strides) returning C3 (layer2), C4 (layer3) and C5 = CRIS's attention pool over *all* layer4
  positions (no pooled token; the 7x7 positional embedding bicubically resized to the grid) plus
  the ``connect`` 1x1 conv + BatchNorm residual and a ReLU. The text transformer is causal;
  ``encode_text`` returns the word features after ``ln_final`` (no projection) and the sentence
  state = the EOT feature (``argmax`` of the ids) times ``text_projection``.
* ``neck``: the multi-modal FPN with CoordConv.
* ``decoder``: CRIS's transformer decoder (self-attention, cross-attention to the words with 2-D
  and 1-D sine position encodings, the extra ``*_attn_norm`` LayerNorms); the key-padding mask
  is ``input_ids == 0``.
* ``proj``: the projector, a per-sample dynamic 3x3 convolution whose weights come from the
  sentence state; its 1/4-resolution map is upsampled bicubically (``align_corners=True``) to
  the input size (the original's ``img_size``, which medvlsm always sets to the input size).

Padding convention: CRIS masks the words whose id is 0. medvlsm fed CRIS Hugging Face CLIP tokens
padded with 49407 (``<|endoftext|>``), which leaves the mask empty; that is the paper-faithful
default (``CrisConfig.pad_id = 49407``). ``pad_id=0`` gives the original CRIS behaviour. The
model itself never looks at ``attention_mask``: like the original, it derives the mask from the
ids, so the switch lives entirely in the tokenizer, which the input contract
(:func:`input_contract`) tells to pad with ``pad_id``.

Train mode (``model.train()``) matches PyTorch's ``module.train()`` as medvlsm's Lightning loop
uses it: dropout (``config.dropout``, also on the attention weights as ``nn.MultiheadAttention``
does) is active and *every* BatchNorm, the frozen CLIP backbone's included, normalises with batch
statistics and updates its running averages (torch momentum 0.1 = NNX momentum 0.9). Freezing
the backbone is the optimiser's business (``encoder_prefixes``), as ``requires_grad_(False)`` was
in PyTorch. One knowing difference: torch updates ``running_var`` with the unbiased batch
variance, NNX with the biased one (it only matters for batches of a few pixels, e.g. the
``txt_proj`` BatchNorm1d at batch size 2). ``model.eval()`` uses the running averages.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from medvlsm_jax.models.contract import CLIP_MEAN, CLIP_STD, InputContract, TextSpec
from medvlsm_jax.models.resnet import ReLU, Sequential  # torch's nn.Sequential / nn.ReLU, shared
from medvlsm_jax.models.registry import ModelSpec, register
from medvlsm_jax.ops.resize import resize

__all__ = ["CRIS", "CrisConfig", "input_contract", "tiny_config"]

_EPS = 1e-5  # torch's LayerNorm / BatchNorm default
_BN_MOMENTUM = 0.9  # torch momentum 0.1
_NEG = -1e30  # additive "-inf" of the attention masks, finite so that gradients stay clean


@dataclasses.dataclass(frozen=True)
class CrisConfig:
    """Every size of CRIS. Defaults: CLIP RN50 + medvlsm's ``configs/model/cris.yaml``."""

    # CLIP (OpenAI RN50)
    embed_dim: int = 1024
    image_resolution: int = 224
    vision_layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    vision_width: int = 64
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 12
    # CRIS
    word_len: int = 77
    fpn_in: tuple[int, int, int] = (512, 1024, 1024)
    fpn_out: tuple[int, int, int] = (256, 512, 1024)
    vis_dim: int = 512
    word_dim: int = 1024
    num_layers: int = 3
    num_head: int = 8
    dim_ffn: int = 2048
    dropout: float = 0.2
    # tokenizer padding id: 49407 = medvlsm (empty key-padding mask), 0 = original CRIS
    pad_id: int = 49407

    def __post_init__(self) -> None:
        if self.transformer_width != self.vis_dim:
            raise ValueError(f"CRIS cross-attends words of width transformer_width="
                             f"{self.transformer_width} with vis_dim={self.vis_dim}; they must match")
        if self.vis_dim % 4:
            raise ValueError(f"vis_dim={self.vis_dim} must be divisible by 4 (2-D sine encoding)")
        if self.word_len > self.context_length:
            raise ValueError(f"word_len={self.word_len} exceeds context_length={self.context_length}")

    @property
    def vision_heads(self) -> int:
        return self.vision_width * 32 // 64

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def tiny_config() -> CrisConfig:
    """The size of ``shared/reference/cris_tiny`` (tests)."""
    return CrisConfig(
        embed_dim=128, vision_layers=(1, 1, 1, 1), vision_width=8, transformer_width=64,
        transformer_heads=1, transformer_layers=2, fpn_in=(64, 128, 128), fpn_out=(32, 64, 128),
        vis_dim=64, word_dim=128, num_layers=2, num_head=2, dim_ffn=128,
    )


def input_contract(config: CrisConfig) -> InputContract:
    """medvlsm's CRIS inputs: 416² (``configs/model/cris.yaml``), CLIP mean/std, CLIP BPE with
    ``word_len`` tokens padded with ``config.pad_id``."""
    return InputContract((416, 416), CLIP_MEAN, CLIP_STD, TextSpec("clip", config.word_len, pad_id=config.pad_id))


# ---------------------------------------------------------------------------------------------
# Layers with PyTorch's default initialisation (kaiming-uniform a=sqrt(5): U(+-1/sqrt(fan_in)))


def _torch_uniform(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _linear(din: int, dout: int, rngs: nnx.Rngs, *, bias: bool = True) -> nnx.Linear:
    return nnx.Linear(din, dout, use_bias=bias, kernel_init=_torch_uniform(din),
                      bias_init=_torch_uniform(din), rngs=rngs)


def _conv(din: int, dout: int, k: int, rngs: nnx.Rngs, *, stride: int = 1, padding: int = 0,
          bias: bool = False) -> nnx.Conv:
    return nnx.Conv(din, dout, (k, k), strides=(stride, stride), padding=((padding, padding),) * 2,
                    use_bias=bias, kernel_init=_torch_uniform(din * k * k),
                    bias_init=_torch_uniform(din * k * k), rngs=rngs)


def _batch_norm(n: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(n, momentum=_BN_MOMENTUM, epsilon=_EPS, use_fast_variance=False, rngs=rngs)


def _layer_norm(n: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(n, epsilon=_EPS, use_fast_variance=False, rngs=rngs)


class Upsample2x(nnx.Module):
    """``nn.Upsample(scale_factor=2, mode="bilinear")`` (align_corners=False) on NHWC."""

    def __call__(self, x):
        return _up2(x)


def _up2(x):
    return resize(x, (2 * x.shape[1], 2 * x.shape[2]), method="bilinear")


def conv_layer(din: int, dout: int, k: int, padding: int, rngs: nnx.Rngs) -> Sequential:
    """CRIS's ``conv_layer``: Conv2d (no bias) -> BatchNorm2d -> ReLU."""
    return Sequential([_conv(din, dout, k, rngs, padding=padding), _batch_norm(dout, rngs), ReLU()])


def _avg_pool(x: jax.Array, k: int) -> jax.Array:
    """``nn.AvgPool2d(k)`` on NHWC (kernel = stride = k, no padding, floor)."""
    if k == 1:
        return x
    b, h, w, c = x.shape
    h2, w2 = h // k, w // k
    x = x[:, : h2 * k, : w2 * k]
    return x.reshape(b, h2, k, w2, k, c).mean(axis=(2, 4))


def _attend(q, k, v, num_heads: int, *, mask=None, dropout: nnx.Dropout | None = None):
    """Scaled dot-product attention of already projected (B, L, E) tensors, heads split from E.

    ``mask`` (broadcastable to (B, heads, Lq, Lk)) is True where attention is allowed.
    """
    b, lq, e = q.shape
    hd = e // num_heads
    q = q.reshape(b, lq, num_heads, hd) * (hd ** -0.5)
    k = k.reshape(b, k.shape[1], num_heads, hd)
    v = v.reshape(b, v.shape[1], num_heads, hd)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
    if mask is not None:
        logits = jnp.where(mask, logits, _NEG)
    weights = jax.nn.softmax(logits, axis=-1)
    if dropout is not None:
        weights = dropout(weights)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, lq, e)


class MultiheadAttention(nnx.Module):
    """``nn.MultiheadAttention`` (batch-first here) with its fused projection split into q/k/v."""

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        # torch: xavier_uniform on the fused (3D, D) in_proj, zero in_proj/out_proj biases
        in_init = nnx.initializers.variance_scaling(0.5, "fan_avg", "uniform")
        zeros = nnx.initializers.zeros_init()
        self.q_proj = nnx.Linear(dim, dim, kernel_init=in_init, bias_init=zeros, rngs=rngs)
        self.k_proj = nnx.Linear(dim, dim, kernel_init=in_init, bias_init=zeros, rngs=rngs)
        self.v_proj = nnx.Linear(dim, dim, kernel_init=in_init, bias_init=zeros, rngs=rngs)
        self.out_proj = nnx.Linear(dim, dim, kernel_init=_torch_uniform(dim), bias_init=zeros, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None

    def __call__(self, query, key, value, *, mask=None):
        x = _attend(self.q_proj(query), self.k_proj(key), self.v_proj(value), self.num_heads,
                    mask=mask, dropout=self.dropout)
        return self.out_proj(x)


# ---------------------------------------------------------------------------------------------
# CLIP ModifiedResNet with CRIS's attention pool


class Bottleneck(nnx.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        out = planes * self.expansion
        self.stride = stride
        self.conv1 = _conv(inplanes, planes, 1, rngs)
        self.bn1 = _batch_norm(planes, rngs)
        self.conv2 = _conv(planes, planes, 3, rngs, padding=1)
        self.bn2 = _batch_norm(planes, rngs)
        self.conv3 = _conv(planes, out, 1, rngs)
        self.bn3 = _batch_norm(out, rngs)
        # torch: Sequential("-1": AvgPool2d(stride), "0": conv 1x1, "1": BatchNorm2d)
        self.downsample = (Sequential([_conv(inplanes, out, 1, rngs), _batch_norm(out, rngs)])
                           if stride > 1 or inplanes != out else None)

    def __call__(self, x):
        out = jax.nn.relu(self.bn1(self.conv1(x)))
        out = jax.nn.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(_avg_pool(out, self.stride)))
        identity = x if self.downsample is None else self.downsample(_avg_pool(x, self.stride))
        return jax.nn.relu(out + identity)


class AttentionPool2d(nnx.Module):
    """CRIS's attention pool: attention over every position of layer4 + ``connect`` residual."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int, *,
                 rngs: nnx.Rngs):
        self.spacial_dim = spacial_dim
        self.num_heads = num_heads
        key = rngs.params()
        self.positional_embedding = nnx.Param(
            jax.random.normal(key, (spacial_dim ** 2 + 1, embed_dim)) / embed_dim ** 0.5)
        self.k_proj = _linear(embed_dim, embed_dim, rngs)
        self.q_proj = _linear(embed_dim, embed_dim, rngs)
        self.v_proj = _linear(embed_dim, embed_dim, rngs)
        self.c_proj = _linear(embed_dim, output_dim, rngs)
        self.connect = Sequential([_conv(embed_dim, output_dim, 1, rngs), _batch_norm(output_dim, rngs)])

    def __call__(self, x):
        b, h, w, c = x.shape
        res = self.connect(x)
        s = self.spacial_dim
        # the first row (pooled token) is unused; the s x s grid is resized to the feature grid
        pos = self.positional_embedding[...][1:].reshape(s, s, c)
        pos = resize(pos, (h, w), axes=(0, 1), method="bicubic", align_corners=False)
        x = (x + pos).reshape(b, h * w, c)
        x = _attend(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.num_heads)
        x = self.c_proj(x).reshape(b, h, w, -1)
        return jax.nn.relu(x + res)


class ModifiedResNet(nnx.Module):
    def __init__(self, layers: Sequence[int], output_dim: int, heads: int, input_resolution: int,
                 width: int, *, rngs: nnx.Rngs):
        self.conv1 = _conv(3, width // 2, 3, rngs, stride=2, padding=1)
        self.bn1 = _batch_norm(width // 2, rngs)
        self.conv2 = _conv(width // 2, width // 2, 3, rngs, padding=1)
        self.bn2 = _batch_norm(width // 2, rngs)
        self.conv3 = _conv(width // 2, width, 3, rngs, padding=1)
        self.bn3 = _batch_norm(width, rngs)
        inplanes = width
        stages = []
        for i, blocks in enumerate(layers):
            planes = width * 2 ** i
            stride = 1 if i == 0 else 2
            stage = [Bottleneck(inplanes, planes, stride, rngs=rngs)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes, 1, rngs=rngs) for _ in range(1, blocks)]
            stages.append(Sequential(stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim, rngs=rngs)

    def __call__(self, x):
        """NHWC image -> (C3, C4, C5) at strides 8, 16, 32."""
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = jax.nn.relu(bn(conv(x)))
        x = self.layer1(_avg_pool(x, 2))
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        c5 = self.attnpool(self.layer4(c4))
        return c3, c4, c5


# ---------------------------------------------------------------------------------------------
# CLIP text transformer (OpenAI layout)


class Mlp(nnx.Module):
    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.c_fc = _linear(width, 4 * width, rngs)
        self.c_proj = _linear(4 * width, width, rngs)

    def __call__(self, x):
        x = self.c_fc(x)
        return self.c_proj(x * jax.nn.sigmoid(1.702 * x))  # QuickGELU


class ResidualAttentionBlock(nnx.Module):
    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        self.attn = MultiheadAttention(width, heads, rngs=rngs)
        self.ln_1 = _layer_norm(width, rngs)
        self.mlp = Mlp(width, rngs=rngs)
        self.ln_2 = _layer_norm(width, rngs)

    def __call__(self, x, mask):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, mask=mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nnx.Module):
    def __init__(self, width: int, layers: int, heads: int, *, rngs: nnx.Rngs):
        self.resblocks = nnx.List([ResidualAttentionBlock(width, heads, rngs=rngs) for _ in range(layers)])

    def __call__(self, x, mask):
        for block in self.resblocks:
            x = block(x, mask)
        return x


class CLIP(nnx.Module):
    """CRIS's CLIP backbone: ``encode_image`` -> (C3, C4, C5), ``encode_text`` -> (words, state)."""

    def __init__(self, c: CrisConfig, *, rngs: nnx.Rngs):
        self.visual = ModifiedResNet(c.vision_layers, c.embed_dim, c.vision_heads, c.image_resolution,
                                     c.vision_width, rngs=rngs)
        self.transformer = Transformer(c.transformer_width, c.transformer_layers, c.transformer_heads,
                                       rngs=rngs)
        self.token_embedding = nnx.Embed(c.vocab_size, c.transformer_width,
                                         embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
        self.positional_embedding = nnx.Param(
            0.01 * jax.random.normal(rngs.params(), (c.context_length, c.transformer_width)))
        self.ln_final = _layer_norm(c.transformer_width, rngs)
        self.text_projection = nnx.Param(
            c.transformer_width ** -0.5 * jax.random.normal(rngs.params(), (c.transformer_width, c.embed_dim)))
        self.logit_scale = nnx.Param(jnp.asarray(np.log(1 / 0.07), jnp.float32))  # unused by CRIS

    def encode_image(self, pixel_values):
        return self.visual(pixel_values)

    def encode_text(self, input_ids):
        """(B, L) ids -> word features (B, L, width) after ``ln_final`` and state (B, embed_dim)."""
        length = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.positional_embedding[...][:length]
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        x = self.ln_final(self.transformer(x, causal))
        eot = x[jnp.arange(x.shape[0]), jnp.argmax(input_ids, axis=-1)]
        return x, eot @ self.text_projection[...]


# ---------------------------------------------------------------------------------------------
# Neck, decoder, projector


class CoordConv(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.conv1 = conv_layer(din + 2, dout, 3, 1, rngs)

    def __call__(self, x):
        b, h, w, _ = x.shape
        xs = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, w, dtype=x.dtype)[None, :], (h, w))
        ys = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, h, dtype=x.dtype)[:, None], (h, w))
        coords = jnp.broadcast_to(jnp.stack([xs, ys], axis=-1), (b, h, w, 2))
        return self.conv1(jnp.concatenate([x, coords], axis=-1))


class FPN(nnx.Module):
    def __init__(self, fpn_in: Sequence[int], fpn_out: Sequence[int], *, rngs: nnx.Rngs):
        i3, i4, i5 = fpn_in
        o3, o4, o5 = fpn_out
        self.txt_proj = Sequential([_linear(i5, o5, rngs, bias=False), _batch_norm(o5, rngs), ReLU()])
        self.f1_v_proj = conv_layer(i5, o5, 1, 0, rngs)
        self.norm_layer = Sequential([_batch_norm(o5, rngs), ReLU()])
        self.f2_v_proj = conv_layer(i4, o4, 3, 1, rngs)
        self.f2_cat = conv_layer(o5 + o4, o4, 1, 0, rngs)
        self.f3_v_proj = conv_layer(i3, o3, 3, 1, rngs)
        self.f3_cat = conv_layer(o3 + o4, o4, 1, 0, rngs)
        self.f4_proj5 = conv_layer(o5, o4, 3, 1, rngs)
        self.f4_proj4 = conv_layer(o4, o4, 3, 1, rngs)
        self.f4_proj3 = conv_layer(o4, o4, 3, 1, rngs)
        self.aggr = conv_layer(3 * o4, o4, 1, 0, rngs)
        self.coordconv = Sequential([CoordConv(o4, o4, rngs=rngs), conv_layer(o4, o4, 3, 1, rngs)])

    def __call__(self, c3, c4, c5, state):
        """(C3, C4, C5) NHWC and the sentence state -> fused query map at C4's resolution."""
        f5 = self.norm_layer(self.f1_v_proj(c5) * self.txt_proj(state)[:, None, None, :])
        f4 = self.f2_cat(jnp.concatenate([self.f2_v_proj(c4), _up2(f5)], axis=-1))
        f3 = _avg_pool(self.f3_v_proj(c3), 2)
        f3 = self.f3_cat(jnp.concatenate([f3, f4], axis=-1))
        fq = jnp.concatenate([self.f4_proj3(f3), self.f4_proj4(f4), _up2(self.f4_proj5(f5))], axis=-1)
        return self.coordconv(self.aggr(fq))


def _pos1d(d_model: int, length: int) -> np.ndarray:
    """CRIS's 1-D sine encoding, (length, d_model) float32 (computed like torch, in float32)."""
    if d_model % 2:
        raise ValueError(f"cannot use sin/cos positional encoding with odd dim {d_model}")
    pe = np.zeros((length, d_model), np.float32)
    position = np.arange(length, dtype=np.float32)[:, None]
    div = np.exp(np.arange(0, d_model, 2, dtype=np.float32) * np.float32(-(math.log(10000.0) / d_model)))
    pe[:, 0::2] = np.sin(position * div)
    pe[:, 1::2] = np.cos(position * div)
    return pe


def _pos2d(d_model: int, height: int, width: int) -> np.ndarray:
    """CRIS's 2-D sine encoding, (height * width, d_model) float32: x in the first half of the
    channels, y in the second, sines on even and cosines on odd channels."""
    if d_model % 4:
        raise ValueError(f"cannot use sin/cos positional encoding with dim {d_model} not divisible by 4")
    half = d_model // 2
    div = np.exp(np.arange(0, half, 2, dtype=np.float32) * np.float32(-(math.log(10000.0) / half)))
    pos_w = np.arange(width, dtype=np.float32)[:, None] * div  # (W, half/2)
    pos_h = np.arange(height, dtype=np.float32)[:, None] * div  # (H, half/2)
    pe = np.zeros((height, width, d_model), np.float32)
    pe[:, :, 0:half:2] = np.sin(pos_w)[None]
    pe[:, :, 1:half:2] = np.cos(pos_w)[None]
    pe[:, :, half::2] = np.sin(pos_h)[:, None]
    pe[:, :, half + 1::2] = np.cos(pos_h)[:, None]
    return pe.reshape(height * width, d_model)


class TransformerDecoderLayer(nnx.Module):
    def __init__(self, d_model: int, nhead: int, dim_ffn: int, dropout: float, *, rngs: nnx.Rngs):
        self.self_attn_norm = _layer_norm(d_model, rngs)
        self.cross_attn_norm = _layer_norm(d_model, rngs)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, rngs=rngs)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, rngs=rngs)
        self.ffn = Sequential([
            _linear(d_model, dim_ffn, rngs), ReLU(), nnx.Dropout(dropout, rngs=rngs),
            _layer_norm(dim_ffn, rngs), _linear(dim_ffn, d_model, rngs),
        ])
        self.norm1 = _layer_norm(d_model, rngs)
        self.norm2 = _layer_norm(d_model, rngs)
        self.norm3 = _layer_norm(d_model, rngs)
        self.dropout1 = nnx.Dropout(dropout, rngs=rngs)
        self.dropout2 = nnx.Dropout(dropout, rngs=rngs)
        self.dropout3 = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, vis, txt, vis_pos, txt_pos, keep):
        """vis (B, HW, C), txt (B, L, C), positions (HW, C)/(L, C), keep (B, 1, 1, L) bool."""
        v = self.norm1(vis)
        qk = v + vis_pos
        vis = vis + self.dropout1(self.self_attn_norm(self.self_attn(qk, qk, v)))
        v = self.norm2(vis)
        v = self.multihead_attn(v + vis_pos, txt + txt_pos, txt, mask=keep)
        vis = vis + self.dropout2(self.cross_attn_norm(v))
        return vis + self.dropout3(self.ffn(self.norm3(vis)))


class TransformerDecoder(nnx.Module):
    def __init__(self, num_layers: int, d_model: int, nhead: int, dim_ffn: int, dropout: float, *,
                 rngs: nnx.Rngs):
        self.layers = nnx.List([TransformerDecoderLayer(d_model, nhead, dim_ffn, dropout, rngs=rngs)
                                for _ in range(num_layers)])
        self.norm = _layer_norm(d_model, rngs)

    def __call__(self, vis, txt, pad_mask):
        """vis (B, H, W, C), txt (B, L, C), pad_mask (B, L) True = padding -> (B, H, W, C)."""
        b, h, w, c = vis.shape
        vis_pos = jnp.asarray(_pos2d(c, h, w))
        txt_pos = jnp.asarray(_pos1d(txt.shape[-1], txt.shape[1]))
        keep = ~pad_mask[:, None, None, :]
        out = vis.reshape(b, h * w, c)
        for layer in self.layers:
            out = layer(out, txt, vis_pos, txt_pos, keep)
        return self.norm(out).reshape(b, h, w, c)


class Projector(nnx.Module):
    def __init__(self, word_dim: int, in_dim: int, kernel_size: int = 3, *, rngs: nnx.Rngs):
        self.kernel_size = kernel_size
        self.vis = Sequential([
            Upsample2x(), conv_layer(2 * in_dim, 2 * in_dim, 3, 1, rngs),
            Upsample2x(), conv_layer(2 * in_dim, in_dim, 3, 1, rngs),
            _conv(in_dim, in_dim, 1, rngs, bias=True),
        ])
        self.txt = _linear(word_dim, in_dim * kernel_size * kernel_size + 1, rngs)

    def __call__(self, x, state):
        """x (B, h, w, 2*in_dim) and state (B, word_dim) -> (B, 4h, 4w) logits: each sample is
        convolved with its own 3x3 kernel (and bias) predicted from its sentence state."""
        x = self.vis(x)
        b, h, w, c = x.shape
        k = self.kernel_size
        word = self.txt(state)
        weight = word[:, :-1].reshape(b, c, k, k)  # torch (out=B, in/groups=C, kh, kw)
        bias = word[:, -1]
        lhs = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, h, w, b * c)  # channel = b * C + c
        rhs = jnp.transpose(weight, (2, 3, 1, 0))  # HWIO: (k, k, C, B)
        out = jax.lax.conv_general_dilated(
            lhs, rhs, (1, 1), [(k // 2, k // 2)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=b)
        return jnp.transpose(out[0], (2, 0, 1)) + bias[:, None, None]


# ---------------------------------------------------------------------------------------------
# The model


class CRIS(nnx.Module):
    """CRIS segmentation model: ``__call__(pixel_values NHWC (B, H, W, 3), input_ids) -> logits
    (B, H, W)``: the prediction is resized to the input's own size, as the original resizes it to
    its ``img_size``, which equals the input resolution in every medvlsm setting (416)."""

    encoder_prefixes = ("backbone",)

    def __init__(self, config: CrisConfig, *, rngs: nnx.Rngs):
        c = config
        self.config = config
        self.backbone = CLIP(c, rngs=rngs)
        self.neck = FPN(c.fpn_in, c.fpn_out, rngs=rngs)
        self.decoder = TransformerDecoder(c.num_layers, c.vis_dim, c.num_head, c.dim_ffn, c.dropout, rngs=rngs)
        self.proj = Projector(c.word_dim, c.vis_dim // 2, 3, rngs=rngs)

    def encode(self, pixel_values, input_ids, attention_mask=None) -> dict[str, jax.Array]:
        """Backbone features: C3/C4/C5 (NHWC), word features, sentence state, padding mask.

        ``attention_mask`` is ignored: as in CRIS, padding is where ``input_ids == 0``.
        """
        del attention_mask
        input_ids = jnp.asarray(input_ids, jnp.int32)
        c3, c4, c5 = self.backbone.encode_image(pixel_values)
        words, state = self.backbone.encode_text(input_ids)
        return {"c3": c3, "c4": c4, "c5": c5, "word_features": words, "sentence_state": state,
                "pad_mask": input_ids == 0}

    def decode(self, features: dict[str, jax.Array]) -> jax.Array:
        """Neck, decoder and projector on :meth:`encode`'s features -> logits at the input size
        (C3 has stride 8)."""
        state = features["sentence_state"]
        fq = self.neck(features["c3"], features["c4"], features["c5"], state)
        fq = self.decoder(fq, features["word_features"], features["pad_mask"])
        pred = self.proj(fq, state)
        size = (8 * features["c3"].shape[1], 8 * features["c3"].shape[2])
        return resize(pred, size, axes=(1, 2), method="bicubic", align_corners=True)

    def __call__(self, pixel_values, input_ids, attention_mask=None) -> jax.Array:
        return self.decode(self.encode(pixel_values, input_ids, attention_mask))


SPEC = register(ModelSpec(
    name="cris",
    config_cls=CrisConfig,
    build=lambda config, rngs: CRIS(config, rngs=rngs),
    variants={"base": CrisConfig, "tiny": tiny_config},
    contract=input_contract,
    threshold=0.35,
    legacy_keys={"img_size": None},  # the output size is the input's own size now
))
