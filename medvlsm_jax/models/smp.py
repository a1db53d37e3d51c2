"""The paper's image-only CNN baselines in Flax NNX: segmentation_models_pytorch's ``Unet``,
``UnetPlusPlus`` and ``DeepLabV3Plus`` with a ResNet-50 encoder, as medvlsm builds them
(``src/models/{unet,unetpp,deeplabv3plus}.py``, ``configs/model/*.yaml``: ``encoder_name=resnet50``,
``encoder_weights=imagenet``, ``classes=1``, every other argument at SMP's default).

Weight-compatible with SMP 0.6 (and 0.3.3, which medvlsm pinned: same module tree, and for inputs
divisible by 32 the same forward). Every submodule carries the name of its SMP counterpart, so
:mod:`medvlsm_jax.conversion.rules` maps the state dict key for key; parameter-free torch modules
(ReLU, Identity, pooling, upsampling, dropout) hold their index in ``nn.Sequential`` lists.

* **Unet** (``decoder_channels`` 256/128/64/32/16): each block upsamples ×2 (nearest, to the
  skip's size), concatenates the skip, then two Conv3x3-BatchNorm-ReLU; no centre block for
  ResNets; head = Conv3x3 (``segmentation_head.0``).
* **UnetPlusPlus**: the nested dense decoder ``blocks.x_{depth}_{layer}`` with SMP's channel
  arithmetic and concatenation order; same head.
* **DeepLabV3Plus**: encoder at output stride 16 (``layer4`` dilated 2); ASPP (1x1 branch, three
  depthwise-separable 3x3 branches at rates 12/24/36, image pooling broadcast back), 1x1
  projection, ReLU, dropout 0.5, then a separable 3x3; ×4 bilinear upsampling
  (``align_corners=True``); the 48-channel 1x1 projection of ``layer1`` (stride 4); a separable
  3x3 fuse; head = Conv1x1 + ×4 bilinear (``align_corners=True``).

Contract (:mod:`medvlsm_jax.models.registry`): ``__call__(pixel_values NHWC) -> logits (B, H, W)``
(no text); ``encode(pixel_values)`` returns the encoder's six features
``(x, stem, layer1, layer2, layer3, layer4)`` exactly as SMP's encoder does (the input is kept
because the Unet decoder reads its spatial size); ``decode(features)`` runs decoder and head.
Inputs must be multiples of the output stride (32; 16 for DeepLabV3+), as SMP checks.

BatchNorm: :class:`medvlsm_jax.models.resnet.BatchNorm2d` — PyTorch's train-mode semantics
(running variance updated with the unbiased batch variance). Dropout: ``nnx.Dropout`` with the
``dropout`` RNG stream (torch's mask cannot be reproduced, only its distribution).

Initialisation follows SMP: encoder as torchvision, decoder convolutions kaiming-uniform
(fan-in, ReLU) with zero biases, BatchNorm 1/0, head xavier-uniform with zero bias.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from medvlsm_jax.models.contract import IMAGENET_MEAN, IMAGENET_STD, InputContract
from medvlsm_jax.models.registry import ModelSpec, register
from medvlsm_jax.models.resnet import (
    BatchNorm2d,
    Identity,
    ReLU,
    ResNetConfig,
    ResNetEncoder,
    Sequential,
    check_divisible,
    compute_dtype,
    conv2d,
)
from medvlsm_jax.ops.resize import resize

__all__ = ["DeepLabV3Plus", "DeepLabV3PlusConfig", "Unet", "UnetConfig", "UnetPlusPlus", "UnetPlusPlusConfig"]

# SMP initialize_decoder: kaiming_uniform_(fan_in, relu), bias 0; initialize_head: xavier_uniform_
_DECODER_INIT = nnx.initializers.variance_scaling(2.0, "fan_in", "uniform")
_HEAD_INIT = nnx.initializers.xavier_uniform()


def _dconv(din, dout, k, rngs, *, dtype, **kw) -> nnx.Conv:
    return conv2d(din, dout, k, rngs, kernel_init=_DECODER_INIT, dtype=dtype, **kw)


# ---------------------------------------------------------------------------------------------
# Configs


@dataclasses.dataclass(frozen=True)
class UnetConfig(ResNetConfig):
    """SMP ``Unet(encoder_name="resnet50", classes=1)``; the encoder fields are ResNet-50's."""

    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.decoder_channels) != 5:
            raise ValueError(f"decoder_channels must have 5 entries (encoder depth 5), got {self.decoder_channels}")
        if self.output_stride != 32:
            raise ValueError("Unet / UnetPlusPlus use output_stride 32")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class UnetPlusPlusConfig(UnetConfig):
    """SMP ``UnetPlusPlus(encoder_name="resnet50", classes=1)``."""


@dataclasses.dataclass(frozen=True)
class DeepLabV3PlusConfig(ResNetConfig):
    """SMP ``DeepLabV3Plus(encoder_name="resnet50", classes=1)``."""

    output_stride: int = 16
    decoder_channels: int = 256
    atrous_rates: tuple[int, int, int] = (12, 24, 36)
    aspp_dropout: float = 0.5
    upsampling: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.output_stride != 16:  # SMP also allows 8 (layer3 dilated too): not needed here
            raise ValueError(f"DeepLabV3Plus is implemented for output_stride 16, got {self.output_stride}")
        if len(self.atrous_rates) != 3:
            raise ValueError(f"atrous_rates must have 3 entries, got {self.atrous_rates}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_TINY_ENCODER = dict(layers=(1, 1, 1, 1), width_per_group=16)


def tiny_unet() -> UnetConfig:
    return UnetConfig(**_TINY_ENCODER, decoder_channels=(32, 16, 16, 8, 8))


def tiny_unetpp() -> UnetPlusPlusConfig:
    return UnetPlusPlusConfig(**_TINY_ENCODER, decoder_channels=(32, 16, 16, 8, 8))


def tiny_deeplabv3plus() -> DeepLabV3PlusConfig:
    return DeepLabV3PlusConfig(**_TINY_ENCODER, decoder_channels=32, atrous_rates=(2, 3, 4))


# ---------------------------------------------------------------------------------------------
# Shared pieces


def conv2d_relu(din: int, dout: int, rngs: nnx.Rngs, dtype) -> Sequential:
    """SMP ``Conv2dReLU(kernel 3, padding 1, use_norm="batchnorm")``: conv (no bias), BN, ReLU."""
    return Sequential([_dconv(din, dout, 3, rngs, padding=1, dtype=dtype), BatchNorm2d(dout, dtype=dtype, rngs=rngs),
                       ReLU()])


def _up_nearest(x: jax.Array, size) -> jax.Array:
    """``F.interpolate(x, size, mode="nearest")``."""
    return resize(x, tuple(size), method="nearest")


class UpsampleBilinear(nnx.Module):
    """``nn.Upsample(scale_factor=s, mode="bilinear", align_corners=True)`` on NHWC."""

    def __init__(self, scale: int):
        self.scale = scale

    def __call__(self, x):
        if self.scale == 1:
            return x
        return resize(x, (x.shape[1] * self.scale, x.shape[2] * self.scale), method="bilinear",
                      align_corners=True)


class DecoderBlock(nnx.Module):
    """SMP ``UnetDecoderBlock`` / UNet++ ``DecoderBlock`` (no attention): upsample, concat, 2 convs."""

    def __init__(self, din: int, skip: int, dout: int, *, dtype, rngs: nnx.Rngs):
        self.conv1 = conv2d_relu(din + skip, dout, rngs, dtype)
        self.conv2 = conv2d_relu(dout, dout, rngs, dtype)

    def __call__(self, x, size, skip=None):
        x = _up_nearest(x, size)
        if skip is not None:
            x = jnp.concatenate([x, skip], axis=-1)
        return self.conv2(self.conv1(x))


def segmentation_head(din: int, k: int, upsampling: int, rngs: nnx.Rngs, dtype) -> Sequential:
    """SMP ``SegmentationHead``: conv (classes=1, bias), upsampling, activation (None)."""
    conv = conv2d(din, 1, k, rngs, padding=k // 2, bias=True, kernel_init=_HEAD_INIT, dtype=dtype)
    return Sequential([conv, UpsampleBilinear(upsampling) if upsampling > 1 else Identity(), Identity()])


class _SmpModel(nnx.Module):
    """``__call__ = decode(encode(pixel_values))``; the logits channel is squeezed, float32 (float64
    for a float64 model)."""

    encoder_prefixes = ("encoder",)
    output_stride = 32

    def encode(self, pixel_values) -> tuple[jax.Array, ...]:
        """SMP's encoder features ``(x, stem, layer1, ..., layer4)``, NHWC."""
        x = jnp.asarray(pixel_values, compute_dtype(self.config.dtype) or jnp.float32)
        return tuple(self.encoder(x))

    def decode(self, features) -> jax.Array:
        y = self.segmentation_head(self.decoder(list(features)))
        return y[..., 0].astype(jnp.promote_types(y.dtype, jnp.float32))

    def __call__(self, pixel_values) -> jax.Array:
        check_divisible(pixel_values.shape[1:3], self.output_stride)
        return self.decode(self.encode(pixel_values))


# ---------------------------------------------------------------------------------------------
# Unet


class UnetDecoder(nnx.Module):
    def __init__(self, encoder_channels, decoder_channels, *, dtype, rngs: nnx.Rngs):
        enc = list(encoder_channels[1:])[::-1]
        in_ch = [enc[0]] + list(decoder_channels[:-1])
        skip_ch = enc[1:] + [0]
        self.blocks = nnx.List([DecoderBlock(i, s, o, dtype=dtype, rngs=rngs)
                                for i, s, o in zip(in_ch, skip_ch, decoder_channels)])

    def __call__(self, features):
        shapes = [f.shape[1:3] for f in features][::-1]
        feats = features[1:][::-1]
        x, skips = feats[0], feats[1:]
        for i, block in enumerate(self.blocks):
            x = block(x, shapes[i + 1], skips[i] if i < len(skips) else None)
        return x


class Unet(_SmpModel):
    def __init__(self, config: UnetConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype = compute_dtype(config.dtype)
        self.encoder = ResNetEncoder(config, rngs=rngs)
        self.decoder = UnetDecoder(config.out_channels, config.decoder_channels, dtype=dtype, rngs=rngs)
        self.segmentation_head = segmentation_head(config.decoder_channels[-1], 3, 1, rngs, dtype)


# ---------------------------------------------------------------------------------------------
# UnetPlusPlus


class _Blocks(nnx.Module):
    """``nn.ModuleDict`` with keys ``x_{depth}_{layer}`` (attribute names)."""

    def __init__(self, blocks: dict[str, nnx.Module]):
        for name, block in blocks.items():
            setattr(self, name, block)

    def __getitem__(self, name: str) -> nnx.Module:
        return getattr(self, name)


class UnetPlusPlusDecoder(nnx.Module):
    def __init__(self, encoder_channels, decoder_channels, *, dtype, rngs: nnx.Rngs):
        enc = list(encoder_channels[1:])[::-1]
        self.in_channels = [enc[0]] + list(decoder_channels[:-1])
        self.skip_channels = enc[1:] + [0]
        self.out_channels = list(decoder_channels)
        blocks = {}
        for layer in range(len(self.in_channels) - 1):
            for depth in range(layer + 1):
                if depth == 0:
                    in_ch = self.in_channels[layer]
                    skip_ch = self.skip_channels[layer] * (layer + 1)
                    out_ch = self.out_channels[layer]
                else:
                    out_ch = self.skip_channels[layer]
                    skip_ch = self.skip_channels[layer] * (layer + 1 - depth)
                    in_ch = self.skip_channels[layer - 1]
                blocks[f"x_{depth}_{layer}"] = DecoderBlock(in_ch, skip_ch, out_ch, dtype=dtype, rngs=rngs)
        last = len(self.in_channels) - 1
        blocks[f"x_0_{last}"] = DecoderBlock(self.in_channels[-1], 0, self.out_channels[-1], dtype=dtype, rngs=rngs)
        self.blocks = _Blocks(blocks)
        self.depth = last

    def __call__(self, features):
        feats = features[1:][::-1]

        def up2(x):  # F.interpolate(scale_factor=2.0)
            return (2 * x.shape[1], 2 * x.shape[2])

        dense = {}
        for layer in range(len(self.in_channels) - 1):
            for depth in range(self.depth - layer):
                if layer == 0:
                    x = feats[depth]
                    dense[f"x_{depth}_{depth}"] = self.blocks[f"x_{depth}_{depth}"](x, up2(x), feats[depth + 1])
                else:
                    li = depth + layer
                    cat = [dense[f"x_{idx}_{li}"] for idx in range(depth + 1, li + 1)]
                    cat = jnp.concatenate(cat + [feats[li + 1]], axis=-1)
                    x = dense[f"x_{depth}_{li - 1}"]
                    dense[f"x_{depth}_{li}"] = self.blocks[f"x_{depth}_{li}"](x, up2(x), cat)
        x = dense[f"x_0_{self.depth - 1}"]
        return self.blocks[f"x_0_{self.depth}"](x, up2(x))


class UnetPlusPlus(_SmpModel):
    def __init__(self, config: UnetPlusPlusConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype = compute_dtype(config.dtype)
        self.encoder = ResNetEncoder(config, rngs=rngs)
        self.decoder = UnetPlusPlusDecoder(config.out_channels, config.decoder_channels, dtype=dtype, rngs=rngs)
        self.segmentation_head = segmentation_head(config.decoder_channels[-1], 3, 1, rngs, dtype)


# ---------------------------------------------------------------------------------------------
# DeepLabV3Plus


def separable_conv(din: int, dout: int, rngs: nnx.Rngs, dtype, *, padding: int = 1, dilation: int = 1) -> Sequential:
    """SMP ``SeparableConv2d(kernel 3, bias=False)``: depthwise 3x3 then pointwise 1x1."""
    return Sequential([
        _dconv(din, din, 3, rngs, padding=padding, dilation=dilation, groups=din, dtype=dtype),
        _dconv(din, dout, 1, rngs, dtype=dtype),
    ])


class GlobalAvgPool(nnx.Module):
    """``nn.AdaptiveAvgPool2d(1)`` on NHWC."""

    def __call__(self, x):
        return jnp.mean(x.astype(jnp.promote_types(x.dtype, jnp.float32)), axis=(1, 2), keepdims=True).astype(x.dtype)


class ASPPPooling(Sequential):
    """Image pooling branch; the 1x1 result is bilinearly resized back, i.e. broadcast."""

    def __call__(self, x):
        y = super().__call__(x)
        return jnp.broadcast_to(y, x.shape[:3] + y.shape[3:])


class ASPP(nnx.Module):
    def __init__(self, din: int, dout: int, rates, dropout: float, *, dtype, rngs: nnx.Rngs):
        bn = lambda: BatchNorm2d(dout, dtype=dtype, rngs=rngs)  # noqa: E731
        convs = [Sequential([_dconv(din, dout, 1, rngs, dtype=dtype), bn(), ReLU()])]
        for r in rates:  # ASPPSeparableConv
            convs.append(Sequential([separable_conv(din, dout, rngs, dtype, padding=r, dilation=r), bn(), ReLU()]))
        convs.append(ASPPPooling([GlobalAvgPool(), _dconv(din, dout, 1, rngs, dtype=dtype), bn(), ReLU()]))
        self.convs = nnx.List(convs)
        self.project = Sequential([_dconv(5 * dout, dout, 1, rngs, dtype=dtype), bn(), ReLU(),
                                   nnx.Dropout(dropout, rngs=rngs)])

    def __call__(self, x):
        return self.project(jnp.concatenate([conv(x) for conv in self.convs], axis=-1))


class DeepLabV3PlusDecoder(nnx.Module):
    def __init__(self, c: DeepLabV3PlusConfig, *, dtype, rngs: nnx.Rngs):
        enc = c.out_channels
        d = c.decoder_channels
        self.aspp = Sequential([
            ASPP(enc[-1], d, c.atrous_rates, c.aspp_dropout, dtype=dtype, rngs=rngs),
            separable_conv(d, d, rngs, dtype),
            BatchNorm2d(d, dtype=dtype, rngs=rngs),
            ReLU(),
        ])
        self.up = UpsampleBilinear(4)  # SMP: 4 at output stride 16 (encoder depth 5)
        self.block1 = Sequential([_dconv(enc[2], 48, 1, rngs, dtype=dtype), BatchNorm2d(48, dtype=dtype, rngs=rngs),
                                  ReLU()])
        self.block2 = Sequential([separable_conv(48 + d, d, rngs, dtype), BatchNorm2d(d, dtype=dtype, rngs=rngs),
                                  ReLU()])

    def __call__(self, features):
        aspp = self.up(self.aspp(features[-1]))
        high = self.block1(features[2])
        return self.block2(jnp.concatenate([aspp, high], axis=-1))


class DeepLabV3Plus(_SmpModel):
    output_stride = 16

    def __init__(self, config: DeepLabV3PlusConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.output_stride = config.output_stride
        dtype = compute_dtype(config.dtype)
        self.encoder = ResNetEncoder(config, rngs=rngs)
        self.decoder = DeepLabV3PlusDecoder(config, dtype=dtype, rngs=rngs)
        self.segmentation_head = segmentation_head(config.decoder_channels, 1, config.upsampling, rngs, dtype)


# ---------------------------------------------------------------------------------------------

FAMILIES = {"unet": Unet, "unetpp": UnetPlusPlus, "deeplabv3plus": DeepLabV3Plus}
_CONFIGS = {"unet": (UnetConfig, tiny_unet), "unetpp": (UnetPlusPlusConfig, tiny_unetpp),
            "deeplabv3plus": (DeepLabV3PlusConfig, tiny_deeplabv3plus)}

def input_contract(config: Any) -> InputContract:
    """medvlsm's CNN inputs: 256² (``img_size: 256``; squares, see
    :mod:`medvlsm_jax.data.shorter_side`), ImageNet mean/std, no text."""
    del config
    return InputContract((256, 256), IMAGENET_MEAN, IMAGENET_STD, text=None)


for _name, _cls in FAMILIES.items():
    _cfg, _tiny = _CONFIGS[_name]
    register(ModelSpec(
        name=_name,
        config_cls=_cfg,
        build=(lambda cls: lambda config, rngs: cls(config, rngs=rngs))(_cls),
        variants={"base": _cfg, "tiny": _tiny},
        contract=input_contract,
        threshold=0.5,
        zeroshot=False,  # a segmentation network with no prompt: only ever evaluated after training
    ))
