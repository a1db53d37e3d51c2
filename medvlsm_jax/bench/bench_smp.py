"""The CNN baselines' PyTorch references (segmentation_models_pytorch) for ``medvlsm-bench``.

    medvlsm-bench models --models unet,unetpp,deeplabv3plus --modes inference,full --torch

SMP ``Unet`` / ``UnetPlusPlus`` / ``DeepLabV3Plus`` as medvlsm builds them (``encoder_name=resnet50``,
``classes=1``, every other argument at SMP's default), random init (``encoder_weights=None``:
nothing is downloaded). ``tiny`` = :mod:`medvlsm_jax.models.smp`'s ``tiny_*`` configs: a
one-block-per-stage ResNet with narrow bottlenecks registered in SMP's own encoder registry
(:func:`register_tiny_encoder`; the same ``ResNetEncoder`` class and module tree as ``resnet50``),
narrow decoders. ``tests/conversion/smp_reference.py`` builds its parity references with
:func:`smp_model`. Inputs: the model's contract (pixel values only; 256² by default).

Modes, as medvlsm runs the CNNs (``configs/cnn.py``, the released recipe):

* ``inference``: ``model.eval()`` under ``torch.inference_mode``; ``bf16`` = autocast (AMP);
* ``full``: the whole network trained (medvlsm's CNNs have no frozen encoder), BatchNorm in train
  mode, ``tuned_dice`` (medvlsm's ``TunedDiceLoss`` on ``sigmoid(logits)``, vectorised: soft Dice
  per example whose mask holds a 1, summed over the batch and divided by its size — as
  :func:`medvlsm_jax.train.losses.tuned_dice`), gradient clipping 0.5 (Lightning's
  ``gradient_clip_val``) and ``Adam(lr 1e-3)``; ``TRAIN_OVERRIDES`` gives the Flax trainer the same;
* ``frozen``: not a CNN recipe (they train whole): ``medvlsm-bench`` skips the row on both sides
  (``bench.TRAINS_WHOLE``).
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Callable

import numpy as np

from medvlsm_jax.bench import torch_steps

LR, GRAD_CLIP = 1e-3, 0.5
TRAIN_OVERRIDES = {"optimizer": "adam", "lr": LR, "weight_decay": 0.0, "grad_clip": GRAD_CLIP, "loss": "tuned_dice"}
SKIPPED_MODES = {"frozen": "trains whole (medvlsm's CNN recipe: freeze_encoder=False); see the full rows"}
TINY_ENCODER = "medvlsm_tiny_resnet"
FAMILIES = ("unet", "unetpp", "deeplabv3plus")


def register_tiny_encoder() -> str:
    """Registers :data:`TINY_ENCODER` in SMP's encoder registry (idempotent): ResNet-50's encoder
    with one bottleneck per stage and ``width_per_group=16`` (= ``medvlsm_jax.models.smp._TINY_ENCODER``)."""
    from segmentation_models_pytorch.encoders import encoders

    if TINY_ENCODER not in encoders:
        tiny = copy.deepcopy(encoders["resnet50"])
        tiny["params"].update(layers=[1, 1, 1, 1], width_per_group=16)
        tiny["pretrained_settings"] = {}
        encoders[TINY_ENCODER] = tiny
    return TINY_ENCODER


@functools.cache
def smp_models() -> dict[str, tuple[type, dict[str, dict[str, Any]]]]:
    """family -> (SMP class, {variant: kwargs}); the tiny kwargs mirror ``medvlsm_jax.models.smp.tiny_*``."""
    import segmentation_models_pytorch as smp

    return {
        "unet": (smp.Unet, {"base": {}, "tiny": dict(decoder_channels=(32, 16, 16, 8, 8))}),
        "unetpp": (smp.UnetPlusPlus, {"base": {}, "tiny": dict(decoder_channels=(32, 16, 16, 8, 8))}),
        "deeplabv3plus": (smp.DeepLabV3Plus, {"base": {}, "tiny": dict(decoder_channels=32,
                                                                       decoder_atrous_rates=(2, 3, 4))}),
    }


def smp_model(family: str, variant: str, **overrides):
    """SMP's ``family`` model of ``variant`` as medvlsm configures it (``classes=1``), random init."""
    cls, variants = smp_models()[family]
    if variant not in variants:
        raise KeyError(f"no SMP reference for {family} variant {variant!r}; choose {' or '.join(variants)}")
    encoder = "resnet50" if variant == "base" else register_tiny_encoder()
    return cls(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=1,
               **{**variants[variant], **overrides})


def torch_model(variant: str, device: str, seed: int = 0, *, family: str):
    """SMP's ``family`` model of ``variant`` on ``device`` (``medvlsm-bench`` binds ``family`` from
    its ``REFERENCES`` entry ``medvlsm_jax.bench.bench_smp:<family>``)."""
    import torch

    torch.manual_seed(seed)
    return smp_model(family, variant).to(device)


def tuned_dice(logits, mask):
    """medvlsm ``TunedDiceLoss`` (one channel) on ``sigmoid(logits)``: MONAI soft Dice per example
    whose mask contains a 1 (0 otherwise), summed and divided by the batch size."""
    import torch

    p = logits.float().sigmoid().flatten(1)
    m = mask.flatten(1)
    dice = 1 - (2 * (p * m).sum(1) + 1e-5) / (p.sum(1) + m.sum(1) + 1e-5)
    return torch.where((m == 1).any(1), dice, torch.zeros_like(dice)).sum() / len(dice)


def reference_step(model, mode: str, batch: dict[str, np.ndarray], *, device: str, amp: bool,
                   compile_model: bool = False) -> Callable[[], Any]:
    """A zero-argument PyTorch step of ``mode`` (inference | full) on ``batch`` (pixel values and,
    for training, masks: the CNNs take no prompt)."""
    import torch

    t = torch_steps.to_torch(batch, device)
    x = t["pixel_values"]
    fwd = torch.compile(model) if compile_model else model
    if mode == "inference":
        model.eval()

        def infer():
            with torch.inference_mode(), torch_steps.autocast(device, amp):
                return fwd(x)
        return infer
    if mode != "full":
        raise ValueError(f"no CNN reference for mode {mode!r}: {SKIPPED_MODES.get(mode, 'unknown mode')}")
    model.train()
    model.requires_grad_(True)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=LR)
    return torch_steps.train_step(lambda: tuned_dice(fwd(x)[:, 0], t["mask"]), params, opt,
                                  grad_clip=GRAD_CLIP, device=device, amp=amp)
