"""Seeded random-init segmentation_models_pytorch references for the CNN parity tests.

``tiny`` models use SMP's own encoder registry (``smp.encoders.encoders``) for a one-block-per-stage
ResNet with narrow bottlenecks — the same ``ResNetEncoder`` class and module tree as ``resnet50``
(:mod:`medvlsm_jax.bench.bench_smp`, which the benchmark also builds its references with).
"""

from __future__ import annotations

import torch

# the SMP models (and the tiny encoder registered in SMP's registry) are the benchmark's references
from medvlsm_jax.bench.bench_smp import TINY_ENCODER, register_tiny_encoder, smp_model, smp_models  # noqa: F401

register_tiny_encoder()
SMP_MODELS = smp_models()  # family -> (SMP class, {variant: kwargs})


def build(family: str, variant: str, seed: int, **overrides) -> torch.nn.Module:
    """SMP model as medvlsm configures it (classes=1), random init with random BatchNorm
    scales/shifts and conv biases, and BatchNorm running statistics calibrated on a random batch
    then perturbed (means shifted by 0.2 std, variances scaled by U(0.6, 1.4)). Eval mode."""
    torch.manual_seed(seed)
    model = smp_model(family, variant, **overrides)
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
