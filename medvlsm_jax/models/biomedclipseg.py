"""BiomedCLIPSeg and BiomedCLIPSeg-D (Poudel et al., 2024) in Flax NNX: BiomedCLIP's encoders
(open_clip ``CustomTextCLIP``: a timm ViT-B/16 image tower and a PubMedBERT text tower) with the
CLIPSeg decoder, as medvlsm's ``src/models/biomedclipseg.py`` builds them.

Attribute names mirror the PyTorch state dict of medvlsm's ``BiomedCLIPSeg`` module
(``biomedclip.visual.trunk.blocks.N.attn.qkv``, ``biomedclip.text.transformer.encoder.layer.N
.attention.self.query``, ``decoder.film_mul`` ...), so conversion is the generic rule set of
:mod:`medvlsm_jax.conversion.rules`.

* **Image tower** — open_clip's ``TimmModel`` around timm ``vit_base_patch16_224`` with
  ``timm_pool=""`` (timm's default ``token`` pool: the class token) and ``timm_proj="linear"``
  (``head.proj``: 768 -> 512, no bias): patch embedding (conv with bias), class token, absolute
  position embeddings, pre-norm blocks (fused ``qkv`` with bias, exact GELU, LayerNorm eps 1e-6),
  final ``norm``. Inputs must be ``image_size`` square, as timm's fixed-size ViT demands.
* **Text tower** — open_clip's ``HFTextEncoder``: a Hugging Face ``BertModel`` (word, position and
  token-type embeddings, post-norm layers, exact GELU, LayerNorm eps 1e-12, no pooling layer), then
  the pooler named by ``hf_pooler_type`` (BiomedCLIP: ``cls_last_hidden_state_pooler``, the class
  token of the last hidden state) and ``hf_proj_type`` (BiomedCLIP: ``mlp``, i.e. ``Linear(768,
  640, bias=False)``, GELU, ``Linear(640, 512, bias=False)``; 640 = (768 + 512) // 2).
* **Decoder** — CLIPSeg's (:class:`medvlsm_jax.models.clipseg.CLIPSegDecoder`), FiLM-conditioned on
  the 512-d text embedding and fed ViT block outputs.

``extract_layers`` are the 0-based ViT blocks whose outputs the decoder reads. medvlsm collects
only block outputs (no embedding entry) but indexes them as transformers does, ``hidden_states[i +
1]`` for CLIPSeg's ``extract_layers`` 3/6/9, so it taps blocks **4, 7 and 10**: that is the default
here. ``extract_layers=(3, 6, 9)`` is the corrected variant (the depths CLIPSeg itself uses).
``encode`` runs only the blocks up to the deepest tap (11 of 12 by default); the whole tower (12
blocks, final norm, image head) is kept so that :meth:`BiomedCLIPSeg.encode_image` gives
BiomedCLIP's image embedding and conversion is lossless.

**Dropout.** medvlsm keeps the frozen BERT in train mode during training (``requires_grad_(False)``
does not switch modes), so BERT's dropout (0.1) is active on the text features while training;
the vision tower has none. The model reproduces that when run in train mode with
``text_dropout > 0``; ``encode`` under ``model.eval()`` (inference, the frozen-feature cache) is
deterministic.

BiomedCLIPSeg-D is the same model with the decoder initialised from a converted CLIPSeg
checkpoint (``medvlsm-convert biomedclipseg SRC DST --decoder CLIPSEG_DIR``); ``decoder_init``
records which one a folder holds. Zero-shot segmentation is not defined for either.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from medvlsm_jax.models.clipseg import CLIPSegConfig, CLIPSegDecoder
from medvlsm_jax.models.contract import CLIP_MEAN, CLIP_STD, InputContract, TextSpec
from medvlsm_jax.models.registry import ModelSpec, register

Array = jax.Array

POOLERS = ("cls_last_hidden_state_pooler", "cls_pooler", "mean_pooler")
TEXT_PROJECTIONS = ("mlp", "linear")
DECODER_INITS = ("random", "clipseg")
# medvlsm taps hidden_states[i + 1] of a list without the embedding entry for CLIPSeg's 3/6/9
MEDVLSM_EXTRACT_LAYERS = (4, 7, 10)
CORRECTED_EXTRACT_LAYERS = (3, 6, 9)
DEMO_VOCAB = pathlib.Path(__file__).resolve().parents[1] / "assets" / "bert_demo"


@dataclasses.dataclass(frozen=True)
class BiomedCLIPSegConfig:
    # image tower: timm ViT (vit_base_patch16_224) + open_clip linear head
    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_mlp_dim: int = 3072
    vision_eps: float = 1e-6
    vision_proj_bias: bool = False  # open_clip timm_proj_bias
    embed_dim: int = 512  # open_clip joint embedding: image head and text projection outputs
    # text tower: BERT (PubMedBERT-base, uncased) + open_clip pooler and projection
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    text_width: int = 768
    text_layers: int = 12
    text_heads: int = 12
    text_intermediate_size: int = 3072
    text_eps: float = 1e-12
    text_dropout: float = 0.1  # BertConfig hidden_dropout_prob (train mode only)
    text_attention_dropout: float = 0.1  # BertConfig attention_probs_dropout_prob
    pad_token_id: int = 0  # attention mask when none is given: input_ids != pad_token_id
    text_pooler: str = "cls_last_hidden_state_pooler"
    text_proj: str = "mlp"
    context_length: int = 256
    # the tokenizer folder when no converted folder gives one: "" none (a converted model folder's
    # tokenizer/ is required), "demo": the small bundled vocabulary of the tiny variant
    # (medvlsm_jax/assets/bert_demo, made by tools/make_demo_vocab.py), else a folder path
    vocab: str = ""
    # decoder: CLIPSeg rd64-refined
    extract_layers: tuple[int, ...] = MEDVLSM_EXTRACT_LAYERS  # 0-based ViT blocks tapped
    reduce_dim: int = 64
    decoder_heads: int = 4
    decoder_intermediate_size: int = 2048
    conditional_layer: int = 0
    use_complex_transposed_convolution: bool = True
    decoder_eps: float = 1e-5
    decoder_init: str = "random"  # "random": BiomedCLIPSeg; "clipseg": BiomedCLIPSeg-D
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def vision_depth(self) -> int:
        """Blocks run by :meth:`BiomedCLIPSeg.encode`: up to the deepest tapped block."""
        return max(self.extract_layers) + 1

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def decoder_config(self) -> CLIPSegConfig:
        """The CLIPSeg config the shared decoder module reads."""
        return CLIPSegConfig(
            patch_size=self.patch_size, vision_hidden_size=self.vision_width, projection_dim=self.embed_dim,
            extract_layers=tuple(self.extract_layers), reduce_dim=self.reduce_dim,
            decoder_heads=self.decoder_heads, decoder_intermediate_size=self.decoder_intermediate_size,
            conditional_layer=self.conditional_layer,
            use_complex_transposed_convolution=self.use_complex_transposed_convolution,
            layer_norm_eps=self.decoder_eps,
        )


def base() -> BiomedCLIPSegConfig:
    """``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`` + the rd64-refined decoder,
    taps as medvlsm (blocks 4/7/10), random decoder (BiomedCLIPSeg)."""
    return BiomedCLIPSegConfig()


def base_d() -> BiomedCLIPSegConfig:
    """BiomedCLIPSeg-D: the decoder comes from a converted CLIPSeg (``--decoder`` at conversion)."""
    return BiomedCLIPSegConfig(decoder_init="clipseg")


def corrected() -> BiomedCLIPSegConfig:
    """Taps at blocks 3/6/9, the depths CLIPSeg reads (medvlsm is off by one)."""
    return BiomedCLIPSegConfig(extract_layers=CORRECTED_EXTRACT_LAYERS)


def tiny() -> BiomedCLIPSegConfig:
    """The same structure at a few hundred thousand parameters (plus the BERT-size vocabulary
    table) for tests and the CPU demo; 224² inputs like the full model; the bundled demo
    vocabulary unless a converted folder brings its own."""
    return BiomedCLIPSegConfig(
        vision_width=32, vision_layers=5, vision_heads=2, vision_mlp_dim=64, embed_dim=32,
        text_width=32, text_layers=2, text_heads=2, text_intermediate_size=64, max_position_embeddings=256,
        extract_layers=(2, 3, 4), reduce_dim=16, decoder_heads=2, decoder_intermediate_size=32,
        vocab="demo",
    )


def _gelu(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=False)


def _attention(q: Array, k: Array, v: Array, heads: int, mask: Array | None = None,
               dropout: nnx.Dropout | None = None) -> Array:
    """Softmax attention of projected (B, T, D) tensors; ``mask`` True = attend."""
    b, t, d = q.shape
    hd = d // heads
    split = lambda y: y.reshape(b, y.shape[1], heads, hd)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * jnp.asarray(hd ** -0.5, q.dtype), k)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    if dropout is not None:
        weights = dropout(weights)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, d)


# ----------------------------------------------------------------------------- timm ViT


class TimmAttention(nnx.Module):
    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs, dtype=None):
        if dim % heads:
            raise ValueError(f"vision width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nnx.Linear(dim, 3 * dim, dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        q, k, v = jnp.split(self.qkv(x), 3, axis=-1)  # timm: reshape(B, N, 3, heads, hd)
        return self.proj(_attention(q, k, v, self.heads))


class TimmMlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype=None):
        self.fc1 = nnx.Linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.fc2(_gelu(self.fc1(x)))


class TimmBlock(nnx.Module):
    """timm ``Block`` (pre-norm, no layer scale, no drop path)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, eps: float, *, rngs: nnx.Rngs, dtype=None):
        self.norm1 = nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, rngs=rngs)
        self.attn = TimmAttention(dim, heads, rngs=rngs, dtype=dtype)
        self.norm2 = nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, rngs=rngs)
        self.mlp = TimmMlp(dim, mlp_dim, rngs=rngs, dtype=dtype)

    def __call__(self, x: Array) -> Array:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nnx.Module):
    def __init__(self, dim: int, patch: int, *, rngs: nnx.Rngs, dtype=None):
        self.patch = patch
        self.proj = nnx.Conv(3, dim, (patch, patch), strides=(patch, patch), padding="VALID", dtype=dtype,
                             rngs=rngs)

    def __call__(self, pixel_values: Array) -> Array:
        x = self.proj(pixel_values)  # (B, h, w, D)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class TimmViT(nnx.Module):
    """timm ``VisionTransformer`` with ``num_classes=0`` (``head`` and ``fc_norm`` are identities)."""

    def __init__(self, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        d = cfg.vision_width
        self.image_size = cfg.image_size
        init = nnx.initializers.normal(0.02)
        self.cls_token = nnx.Param(init(rngs.params(), (1, 1, d)))
        self.pos_embed = nnx.Param(init(rngs.params(), (1, cfg.grid ** 2 + 1, d)))
        self.patch_embed = PatchEmbed(d, cfg.patch_size, rngs=rngs, dtype=dtype)
        self.blocks = nnx.List([TimmBlock(d, cfg.vision_heads, cfg.vision_mlp_dim, cfg.vision_eps, rngs=rngs,
                                          dtype=dtype) for _ in range(cfg.vision_layers)])
        self.norm = nnx.LayerNorm(d, epsilon=cfg.vision_eps, dtype=dtype, rngs=rngs)

    def embed(self, pixel_values: Array) -> Array:
        """``patch_embed`` -> ``_pos_embed`` (class token, then position embeddings)."""
        b, h, w, _ = pixel_values.shape
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"BiomedCLIP's ViT takes {self.image_size}x{self.image_size} inputs "
                             f"(timm's fixed image size), got {h}x{w}")
        x = self.patch_embed(pixel_values)
        cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (b, 1, x.shape[-1]))
        return jnp.concatenate([cls, x], axis=1) + self.pos_embed[...].astype(x.dtype)

    def taps(self, pixel_values: Array, layers: tuple[int, ...]) -> list[Array]:
        """Outputs of the blocks in ``layers`` (ascending), running no block past the deepest."""
        x = self.embed(pixel_values)
        out = []
        for i in range(max(layers) + 1):
            x = self.blocks[i](x)
            if i in layers:
                out.append(x)
        return out

    def __call__(self, pixel_values: Array) -> Array:
        """``forward_features``: every block and the final norm, (B, 1 + h*w, D)."""
        x = self.embed(pixel_values)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class ImageHead(nnx.Module):
    """open_clip ``TimmModel.head`` with ``proj='linear'`` (``drop`` is a no-op at rate 0)."""

    def __init__(self, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        self.proj = nnx.Linear(cfg.vision_width, cfg.embed_dim, use_bias=cfg.vision_proj_bias, dtype=dtype,
                               rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.proj(x)


class TimmVisual(nnx.Module):
    def __init__(self, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        self.trunk = TimmViT(cfg, rngs=rngs, dtype=dtype)
        self.head = ImageHead(cfg, rngs=rngs, dtype=dtype)

    def __call__(self, pixel_values: Array) -> Array:
        """BiomedCLIP's image embedding: head(norm(blocks(x))[:, 0]) (timm ``token`` pool)."""
        return self.head(self.trunk(pixel_values)[:, 0])


# ----------------------------------------------------------------------------- BERT


def _dropout(rate: float, rngs: nnx.Rngs) -> nnx.Dropout | None:
    return nnx.Dropout(rate, rngs=rngs) if rate > 0 else None


def _apply(dropout: nnx.Dropout | None, x: Array) -> Array:
    return x if dropout is None else dropout(x)


class BertEmbeddings(nnx.Module):
    def __init__(self, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        d = cfg.text_width
        self.word_embeddings = nnx.Embed(cfg.vocab_size, d, rngs=rngs)
        self.position_embeddings = nnx.Embed(cfg.max_position_embeddings, d, rngs=rngs)
        self.token_type_embeddings = nnx.Embed(cfg.type_vocab_size, d, rngs=rngs)
        self.LayerNorm = nnx.LayerNorm(d, epsilon=cfg.text_eps, dtype=dtype, rngs=rngs)
        self.dropout = _dropout(cfg.text_dropout, rngs)

    def __call__(self, input_ids: Array) -> Array:
        t = input_ids.shape[-1]
        if t > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {t} exceeds {self.position_embeddings.num_embeddings} positions")
        # token_type_ids default to zeros, position_ids to arange(t) (BertModel without them)
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings.embedding[0]
             + self.position_embeddings.embedding[:t])
        return _apply(self.dropout, self.LayerNorm(x))


class BertSelfAttention(nnx.Module):
    def __init__(self, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        d = cfg.text_width
        if d % cfg.text_heads:
            raise ValueError(f"text width {d} is not divisible by {cfg.text_heads} heads")
        self.heads = cfg.text_heads
        self.query = nnx.Linear(d, d, dtype=dtype, rngs=rngs)
        self.key = nnx.Linear(d, d, dtype=dtype, rngs=rngs)
        self.value = nnx.Linear(d, d, dtype=dtype, rngs=rngs)
        self.dropout = _dropout(cfg.text_attention_dropout, rngs)

    def __call__(self, x: Array, mask: Array) -> Array:
        return _attention(self.query(x), self.key(x), self.value(x), self.heads, mask, self.dropout)


class BertResidualOutput(nnx.Module):
    """``BertSelfOutput`` / ``BertOutput``: dense, dropout, LayerNorm(x + residual)."""

    def __init__(self, din: int, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        self.dense = nnx.Linear(din, cfg.text_width, dtype=dtype, rngs=rngs)
        self.LayerNorm = nnx.LayerNorm(cfg.text_width, epsilon=cfg.text_eps, dtype=dtype, rngs=rngs)
        self.dropout = _dropout(cfg.text_dropout, rngs)

    def __call__(self, x: Array, residual: Array) -> Array:
        return self.LayerNorm(_apply(self.dropout, self.dense(x)) + residual)


class BertAttention(nnx.Module):
    def __init__(self, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        self.self = BertSelfAttention(cfg, rngs=rngs, dtype=dtype)
        self.output = BertResidualOutput(cfg.text_width, cfg, rngs=rngs, dtype=dtype)

    def __call__(self, x: Array, mask: Array) -> Array:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nnx.Module):
    def __init__(self, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        self.dense = nnx.Linear(cfg.text_width, cfg.text_intermediate_size, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return _gelu(self.dense(x))


class BertLayer(nnx.Module):
    def __init__(self, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        self.attention = BertAttention(cfg, rngs=rngs, dtype=dtype)
        self.intermediate = BertIntermediate(cfg, rngs=rngs, dtype=dtype)
        self.output = BertResidualOutput(cfg.text_intermediate_size, cfg, rngs=rngs, dtype=dtype)

    def __call__(self, x: Array, mask: Array) -> Array:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nnx.Module):
    def __init__(self, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        self.layer = nnx.List([BertLayer(cfg, rngs=rngs, dtype=dtype) for _ in range(cfg.text_layers)])

    def __call__(self, x: Array, mask: Array) -> Array:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertPooler(nnx.Module):
    def __init__(self, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        self.dense = nnx.Linear(cfg.text_width, cfg.text_width, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return jnp.tanh(self.dense(x[:, 0]))


class BertModel(nnx.Module):
    """transformers ``BertModel`` (absolute positions); the pooling layer only for ``cls_pooler``,
    as open_clip builds it (``add_pooling_layer=pooler_type == 'cls_pooler'``)."""

    def __init__(self, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        self.embeddings = BertEmbeddings(cfg, rngs=rngs, dtype=dtype)
        self.encoder = BertEncoder(cfg, rngs=rngs, dtype=dtype)
        if cfg.text_pooler == "cls_pooler":
            self.pooler = BertPooler(cfg, rngs=rngs, dtype=dtype)

    def __call__(self, input_ids: Array, attention_mask: Array) -> Array:
        """Last hidden state (B, T, D); padding keys are masked out."""
        mask = (attention_mask > 0)[:, None, None, :]
        return self.encoder(self.embeddings(input_ids), mask)


class HFTextEncoder(nnx.Module):
    """open_clip ``HFTextEncoder``: BERT, pooler, projection."""

    def __init__(self, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        if cfg.text_pooler not in POOLERS:
            raise ValueError(f"text_pooler {cfg.text_pooler!r} is not supported; choose from {POOLERS}")
        if cfg.text_proj not in TEXT_PROJECTIONS:
            raise ValueError(f"text_proj {cfg.text_proj!r} is not supported; choose from {TEXT_PROJECTIONS}")
        self.pooler_type = cfg.text_pooler
        self.pad_token_id = cfg.pad_token_id
        self.transformer = BertModel(cfg, rngs=rngs, dtype=dtype)
        d, e = cfg.text_width, cfg.embed_dim
        if cfg.text_proj == "mlp":  # torch nn.Sequential: the GELU sits at index 1
            hidden = (d + e) // 2
            self.proj = nnx.List([nnx.Linear(d, hidden, use_bias=False, dtype=dtype, rngs=rngs), _gelu,
                                  nnx.Linear(hidden, e, use_bias=False, dtype=dtype, rngs=rngs)])
        else:
            self.proj = nnx.Linear(d, e, use_bias=False, dtype=dtype, rngs=rngs)

    def __call__(self, input_ids: Array, attention_mask: Array | None = None) -> Array:
        """Projected text features (B, embed_dim)."""
        if attention_mask is None:  # medvlsm / open_clip: every non-pad token
            attention_mask = (input_ids != self.pad_token_id).astype(jnp.int32)
        x = self.transformer(input_ids, attention_mask)
        if self.pooler_type == "cls_pooler":
            pooled = self.transformer.pooler(x)
        elif self.pooler_type == "mean_pooler":
            m = attention_mask[..., None].astype(x.dtype)
            pooled = (x * m).sum(1) / m.sum(1)
        else:
            pooled = x[:, 0]
        proj = self.proj
        for f in proj if isinstance(proj, nnx.List) else (proj,):
            pooled = f(pooled)
        return pooled


class BiomedCLIP(nnx.Module):
    """open_clip ``CustomTextCLIP`` without ``logit_scale`` (unused for segmentation)."""

    def __init__(self, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs, dtype=None):
        self.visual = TimmVisual(cfg, rngs=rngs, dtype=dtype)
        self.text = HFTextEncoder(cfg, rngs=rngs, dtype=dtype)


# ----------------------------------------------------------------------------- BiomedCLIPSeg


class BiomedCLIPSeg(nnx.Module):
    """medvlsm's ``BiomedCLIPSeg``: ``biomedclip`` (frozen encoders) + CLIPSeg ``decoder``."""

    encoder_prefixes = ("biomedclip",)

    def __init__(self, cfg: BiomedCLIPSegConfig, *, rngs: nnx.Rngs):
        if cfg.use_complex_transposed_convolution and (cfg.patch_size // 4) ** 2 != cfg.patch_size:
            raise ValueError(f"the complex transposed-convolution head upsamples by (patch_size // 4) ** 2 and "
                             f"needs patch_size 16, got {cfg.patch_size}; use "
                             "use_complex_transposed_convolution=False")
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        if not cfg.extract_layers or list(cfg.extract_layers) != sorted(set(cfg.extract_layers)):
            raise ValueError(f"extract_layers must be distinct and ascending, got {cfg.extract_layers}")
        if min(cfg.extract_layers) < 0 or cfg.vision_depth > cfg.vision_layers:
            raise ValueError(f"extract_layers {cfg.extract_layers} are not blocks of a {cfg.vision_layers}-block ViT")
        if cfg.decoder_init not in DECODER_INITS:
            raise ValueError(f"decoder_init {cfg.decoder_init!r}; choose from {DECODER_INITS}")
        self.config = cfg
        dtype = jnp.dtype(cfg.dtype)
        self.biomedclip = BiomedCLIP(cfg, rngs=rngs, dtype=dtype)
        self.decoder = CLIPSegDecoder(cfg.decoder_config(), rngs=rngs, dtype=dtype)

    def encode_image(self, pixel_values: Array) -> Array:
        """BiomedCLIP's image embedding (B, embed_dim): the whole ViT, final norm, class token, head."""
        return self.biomedclip.visual(pixel_values)

    def encode_text(self, input_ids: Array, attention_mask: Array | None = None) -> Array:
        """BiomedCLIP's text embedding (B, embed_dim): the decoder's conditional embedding."""
        return self.biomedclip.text(input_ids, attention_mask)

    def encode(self, pixel_values: Array, input_ids: Array, attention_mask: Array | None = None) -> dict[str, Any]:
        """The frozen part: the tapped block outputs (shallowest first) and the text embedding."""
        acts = self.biomedclip.visual.trunk.taps(pixel_values, tuple(self.config.extract_layers))
        return {"activations": acts, "conditional": self.encode_text(input_ids, attention_mask)}

    def decode(self, features: dict[str, Any]) -> Array:
        acts = features["activations"]
        side = self.config.grid
        if acts[0].shape[1] != side * side + 1:
            raise ValueError(f"expected {side * side + 1} tokens per activation, got {acts[0].shape[1]}")
        return self.decoder(acts, features["conditional"], (side, side)).astype(jnp.float32)

    def __call__(self, pixel_values: Array, input_ids: Array, attention_mask: Array | None = None) -> Array:
        """pixel_values (B, H, W, 3) normalised NHWC, H = W = image_size -> logits (B, H, W)."""
        return self.decode(self.encode(pixel_values, input_ids, attention_mask))


def input_contract(cfg: BiomedCLIPSegConfig) -> InputContract:
    """medvlsm's BiomedCLIPSeg inputs: the ViT's fixed ``image_size`` (224²), CLIP mean/std, BERT
    WordPiece with ``context_length`` (256) tokens; the vocabulary is the converted folder's (else
    ``cfg.vocab``'s)."""
    vocab = str(DEMO_VOCAB) if cfg.vocab == "demo" else (cfg.vocab or None)
    return InputContract((cfg.image_size, cfg.image_size), CLIP_MEAN, CLIP_STD,
                         TextSpec("bert", cfg.context_length, vocab=vocab))


SPEC = register(ModelSpec(
    name="biomedclipseg",
    config_cls=BiomedCLIPSegConfig,
    build=lambda cfg, rngs: BiomedCLIPSeg(cfg, rngs=rngs),
    variants={"base": base, "d": base_d, "corrected": corrected, "tiny": tiny},
    contract=input_contract,
    threshold=0.5,
    zeroshot=False,
))
