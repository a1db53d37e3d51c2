"""torchvision's ResNet (Bottleneck, v1.5: stride on the 3x3 conv) as segmentation_models_pytorch
uses it for its ``resnet50`` encoder, in Flax NNX, plus the small layers the SMP decoders share.

``ResNetEncoder`` mirrors ``segmentation_models_pytorch.encoders.resnet.ResNetEncoder`` (SMP 0.6;
0.3.3, which medvlsm pinned, has the same module tree): the torchvision ResNet without ``fc`` and
``avgpool``, returning the six features ``[x, stem, layer1, layer2, layer3, layer4]`` (strides 1,
2, 4, 8, 16, 32). ``output_stride=16`` is SMP's ``make_dilated(16)``: *every* Conv2d of
``layer4`` gets stride 1 and dilation 2 with padding ``(k // 2) * 2`` (SMP's own patch, which
differs from torchvision's ``replace_stride_with_dilation``: there the first block keeps
dilation 1). Attribute names are the torch state dict's (``conv1``, ``bn1``, ``layer3.5.conv2``,
``layer1.0.downsample.0`` ...), so :mod:`medvlsm_jax.conversion.rules` converts it key for key.

Images are NHWC here (torch: NCHW). Initialisation follows torchvision (convolutions
kaiming-normal fan-out, BatchNorm 1/0).

:class:`BatchNorm2d` is ``nnx.BatchNorm`` with PyTorch's training-mode semantics: it normalises
with the biased batch variance but updates ``running_var`` with the *unbiased* one
(``n / (n - 1)``, n = B*H*W), momentum 0.1, eps 1e-5, and raises like torch when a channel has a
single value. ``model.train()`` / ``model.eval()`` switch it (``use_running_average``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["BatchNorm2d", "Bottleneck", "ResNetConfig", "ResNetEncoder", "Sequential", "ReLU", "conv2d"]

_EPS = 1e-5  # torch BatchNorm default
_MOMENTUM = 0.9  # torch momentum 0.1
EXPANSION = 4  # Bottleneck.expansion

# torchvision ResNet init: kaiming_normal_(mode="fan_out", nonlinearity="relu"), untruncated
KAIMING_NORMAL_FAN_OUT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """A torchvision Bottleneck ResNet. Defaults: ResNet-50 (SMP ``encoder_name="resnet50"``)."""

    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width_per_group: int = 64  # torchvision base_width; 64 for ResNet-50
    output_stride: int = 32  # 16: layer4 dilated (DeepLabV3+)
    dtype: str = "float32"  # computation dtype (parameters and BatchNorm statistics stay float32)

    def __post_init__(self) -> None:
        if len(self.layers) != 4:
            raise ValueError(f"layers must have 4 entries, got {self.layers}")
        if self.output_stride not in (16, 32):
            raise ValueError(f"output_stride must be 16 or 32, got {self.output_stride}")

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of the six features, as SMP's ``encoder.out_channels``."""
        return (3, 64, 64 * EXPANSION, 128 * EXPANSION, 256 * EXPANSION, 512 * EXPANSION)


def compute_dtype(name: str | None) -> Any:
    return None if name in (None, "", "float32") else jnp.dtype(name)


class BatchNorm2d(nnx.BatchNorm):
    """``torch.nn.BatchNorm2d`` on NHWC (see the module docstring for the train-mode semantics)."""

    def __init__(self, num_features: int, *, dtype: Any = None, rngs: nnx.Rngs):
        super().__init__(num_features, momentum=_MOMENTUM, epsilon=_EPS, dtype=dtype,
                         use_fast_variance=False, rngs=rngs)

    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        if mask is not None:
            raise NotImplementedError("BatchNorm2d takes no mask")
        ura = self.use_running_average if use_running_average is None else use_running_average
        out_dtype = self.dtype or x.dtype
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # statistics in >= float32
        axes = tuple(range(x.ndim - 1))
        if ura:
            mean, var = self.mean[...].astype(xf.dtype), self.var[...].astype(xf.dtype)
        else:
            n = 1
            for a in axes:
                n *= x.shape[a]
            if n < 2:
                raise ValueError(f"Expected more than 1 value per channel when training, got input shape {x.shape}")
            mean = jnp.mean(xf, axis=axes)
            var = jnp.mean(jnp.square(xf - mean), axis=axes)  # biased: used to normalise
            m = self.momentum
            self.mean[...] = jax.lax.stop_gradient(m * self.mean[...] + (1 - m) * mean)
            self.var[...] = jax.lax.stop_gradient(m * self.var[...] + (1 - m) * var * (n / (n - 1)))
        y = (xf - mean) * (jax.lax.rsqrt(var + self.epsilon) * self.scale[...]) + self.bias[...]
        return y.astype(out_dtype)


def conv2d(din: int, dout: int, k: int, rngs: nnx.Rngs, *, stride: int = 1, padding: int = 0,
           dilation: int = 1, groups: int = 1, bias: bool = False, dtype: Any = None,
           kernel_init=KAIMING_NORMAL_FAN_OUT, bias_init=nnx.initializers.zeros_init()) -> nnx.Conv:
    """``nn.Conv2d`` on NHWC (symmetric explicit padding, like torch)."""
    return nnx.Conv(din, dout, (k, k), strides=(stride, stride), padding=((padding, padding),) * 2,
                    kernel_dilation=(dilation, dilation), feature_group_count=groups, use_bias=bias,
                    kernel_init=kernel_init, bias_init=bias_init, dtype=dtype, rngs=rngs)


class Sequential(nnx.List):
    """``nn.Sequential``: applies its items in turn; items keep torch's indices in the key path."""

    def __call__(self, x):
        for layer in self:
            x = layer(x)
        return x


class ReLU(nnx.Module):
    def __call__(self, x):
        return jax.nn.relu(x)


class Identity(nnx.Module):
    def __call__(self, x):
        return x


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """``nn.MaxPool2d(kernel_size=3, stride=2, padding=1)`` on NHWC (implicit -inf padding)."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                 ((0, 0), (1, 1), (1, 1), (0, 0)))


class Bottleneck(nnx.Module):
    """torchvision ``Bottleneck`` (expansion 4, groups 1)."""

    def __init__(self, inplanes: int, planes: int, *, stride: int, dilation: int, base_width: int,
                 downsample: bool, dtype: Any, rngs: nnx.Rngs):
        width = int(planes * (base_width / 64.0))
        out = planes * EXPANSION
        self.conv1 = conv2d(inplanes, width, 1, rngs, dtype=dtype)
        self.bn1 = BatchNorm2d(width, dtype=dtype, rngs=rngs)
        self.conv2 = conv2d(width, width, 3, rngs, stride=stride, padding=dilation, dilation=dilation, dtype=dtype)
        self.bn2 = BatchNorm2d(width, dtype=dtype, rngs=rngs)
        self.conv3 = conv2d(width, out, 1, rngs, dtype=dtype)
        self.bn3 = BatchNorm2d(out, dtype=dtype, rngs=rngs)
        self.downsample = (Sequential([conv2d(inplanes, out, 1, rngs, stride=stride, dtype=dtype),
                                       BatchNorm2d(out, dtype=dtype, rngs=rngs)]) if downsample else None)

    def __call__(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = jax.nn.relu(self.bn1(self.conv1(x)))
        out = jax.nn.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return jax.nn.relu(out + identity)


class ResNetEncoder(nnx.Module):
    """SMP's ``ResNetEncoder`` (depth 5): ``__call__(x NHWC) -> [x, f1, f2, f3, f4, f5]``."""

    def __init__(self, config: ResNetConfig, *, rngs: nnx.Rngs):
        c = config
        dtype = compute_dtype(c.dtype)
        self.conv1 = conv2d(3, 64, 7, rngs, stride=2, padding=3, dtype=dtype)
        self.bn1 = BatchNorm2d(64, dtype=dtype, rngs=rngs)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), c.layers)):
            stride = 1 if i == 0 else 2
            # SMP builds the plain ResNet, then make_dilated(16) patches every conv of layer4
            dilated = i == 3 and c.output_stride == 16
            layer = []
            for j in range(blocks):
                first = j == 0
                layer.append(Bottleneck(inplanes, planes, stride=stride if first and not dilated else 1,
                                        dilation=2 if dilated else 1, base_width=c.width_per_group,
                                        downsample=first and (stride != 1 or inplanes != planes * EXPANSION),
                                        dtype=dtype, rngs=rngs))
                inplanes = planes * EXPANSION
            setattr(self, f"layer{i + 1}", Sequential(layer))

    def __call__(self, x) -> list[jax.Array]:
        features = [x]
        x = jax.nn.relu(self.bn1(self.conv1(x)))
        features.append(x)
        x = self.layer1(max_pool_3x3_s2(x))
        features.append(x)
        for layer in (self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


def check_divisible(shape: Sequence[int], stride: int) -> None:
    """SMP's ``check_input_shape``: height and width must be multiples of the output stride."""
    h, w = shape
    if h % stride or w % stride:
        new_h = -(-h // stride) * stride
        new_w = -(-w // stride) * stride
        raise ValueError(f"Wrong input shape height={h}, width={w}. Expected image height and width "
                         f"divisible by {stride}. Consider pad your images to shape ({new_h}, {new_w}).")
