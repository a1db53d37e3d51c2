"""Seeded random-init segmentation_models_pytorch references for the CNN parity tests.

``tiny`` models use SMP's own encoder registry (``smp.encoders.encoders``) for a one-block-per-stage
ResNet with narrow bottlenecks — the same ``ResNetEncoder`` class and module tree as ``resnet50``.
"""

from __future__ import annotations

import copy

import torch
import segmentation_models_pytorch as smp
from segmentation_models_pytorch.encoders import encoders

TINY_ENCODER = "medvlsm_tiny_resnet"
if TINY_ENCODER not in encoders:
    _tiny = copy.deepcopy(encoders["resnet50"])
    _tiny["params"].update(layers=[1, 1, 1, 1], width_per_group=16)
    _tiny["pretrained_settings"] = {}
    encoders[TINY_ENCODER] = _tiny

# family -> (SMP class, {variant: kwargs}); the tiny kwargs mirror medvlsm_jax.models.smp.tiny_*
SMP_MODELS = {
    "unet": (smp.Unet, {"base": {}, "tiny": dict(decoder_channels=(32, 16, 16, 8, 8))}),
    "unetpp": (smp.UnetPlusPlus, {"base": {}, "tiny": dict(decoder_channels=(32, 16, 16, 8, 8))}),
    "deeplabv3plus": (smp.DeepLabV3Plus, {"base": {}, "tiny": dict(decoder_channels=32, decoder_atrous_rates=(2, 3, 4))}),
}


def build(family: str, variant: str, seed: int, **overrides) -> torch.nn.Module:
    """SMP model as medvlsm configures it (classes=1), random init with random BatchNorm
    scales/shifts and conv biases, and BatchNorm running statistics calibrated on a random batch
    then perturbed (means shifted by 0.2 std, variances scaled by U(0.6, 1.4)). Eval mode."""
    cls, variants = SMP_MODELS[family]
    torch.manual_seed(seed)
    encoder = "resnet50" if variant == "base" else TINY_ENCODER
    model = cls(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=1,
                **{**variants[variant], **overrides})
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in bns:  # random affine parameters
            m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        # running statistics of this network's real activations (momentum 1: the last batch's),
        # so that eval-mode activations keep a sane scale through 50 layers ...
        for m in bns:
            m.momentum = 1.0
        model.train()
        model(torch.randn(2, 3, 64, 64, generator=g))
        for m in bns:  # ... then randomised
            m.momentum = 0.1
            m.running_mean += 0.2 * torch.randn(m.num_features, generator=g) * m.running_var.sqrt()
            m.running_var *= 0.6 + 0.8 * torch.rand(m.num_features, generator=g)
    model.eval()
    return model
