"""CLIPSeg's PyTorch references (transformers ``CLIPSegForImageSegmentation``) for ``medvlsm-bench``.

    python -m medvlsm_jax.bench.bench_clipseg --batch 4 --size 352 [--iters 10] [--dtype fp32] [--out DIR]

is shorthand for ``medvlsm-bench models --models clipseg --modes inference --torch`` (Flax
forward vs transformers forward, side by side in one process).

The references, as the original medvlsm runs them:

* ``inference``: ``model.eval()`` under ``torch.inference_mode``; ``bf16`` = autocast (AMP);
* ``frozen`` (the original-equivalent, paper-faithful finetune step): ``model.clip.requires_grad_(False)``
  (medvlsm's ``freeze_clip``; transformers also runs both encoders under ``torch.no_grad``),
  MONAI-style soft Dice on ``sigmoid(logits)``, gradient clipping (global norm 0.5, Lightning's
  ``gradient_clip_val``) and ``AdamW(lr 2e-3, weight_decay 1e-3)`` on the decoder;
* ``full``: the same step on every parameter. transformers' forward runs the CLIP encoders under
  ``no_grad`` unconditionally (so the original's ``freeze_clip=False`` still trains the decoder
  only); the full reference therefore composes the same submodules with gradients enabled:
  ``clip.vision_model`` (hidden states), ``clip.get_text_features`` and ``decoder``.

The transformers model computes all 12 vision blocks where the Flax port stops at the deepest
tapped block (10 of 12 for rd64-refined): that is part of the measured difference.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

import numpy as np

from medvlsm_jax.bench import torch_steps

# the released recipe's optimiser (medvlsm configs/model/clipseg.yaml, Lightning clipping);
# ``TRAIN_OVERRIDES`` gives the Flax trainer the same one for the side-by-side train steps
LR, WEIGHT_DECAY, GRAD_CLIP = 2e-3, 1e-3, 0.5
TRAIN_OVERRIDES = {"optimizer": "adamw", "lr": LR, "weight_decay": WEIGHT_DECAY, "grad_clip": GRAD_CLIP}


def hf_config(variant: str):
    """The transformers config of ``variant``: ``base`` = CIDAS/clipseg-rd64-refined, ``tiny``."""
    import transformers

    if variant == "base":
        return transformers.CLIPSegConfig(
            text_config={"eos_token_id": 2}, vision_config={"patch_size": 16, "image_size": 224},
            projection_dim=512, extract_layers=[3, 6, 9], reduce_dim=64, decoder_num_attention_heads=4,
            decoder_intermediate_size=2048, use_complex_transposed_convolution=True)
    if variant == "tiny":  # = medvlsm_jax.models.clipseg.tiny()
        return transformers.CLIPSegConfig(
            text_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 64, "eos_token_id": 2},
            vision_config={"hidden_size": 32, "num_hidden_layers": 5, "num_attention_heads": 2,
                           "intermediate_size": 64, "image_size": 64, "patch_size": 16},
            projection_dim=32, extract_layers=[1, 2, 3], reduce_dim=16, decoder_num_attention_heads=2,
            decoder_intermediate_size=32, use_complex_transposed_convolution=True)
    raise KeyError(f"no transformers config for CLIPSeg variant {variant!r}; choose base or tiny")


def torch_model(variant: str, device: str, seed: int = 0):
    import torch
    import transformers

    torch.manual_seed(seed)
    return transformers.CLIPSegForImageSegmentation(hf_config(variant)).to(device)


def soft_dice(logits, mask):
    """MONAI ``DiceLoss`` defaults on ``sigmoid(logits)``, per example, averaged (the paper-faithful loss)."""
    p = logits.float().sigmoid()
    inter, denom = (p * mask).sum((1, 2)), p.sum((1, 2)) + mask.sum((1, 2))
    return (1 - (2 * inter + 1e-5) / (denom + 1e-5)).mean()


def full_forward(model, pixel_values, input_ids, attention_mask):
    """transformers CLIPSeg's forward with gradients through both CLIP encoders."""
    vision = model.clip.vision_model(pixel_values=pixel_values, output_hidden_states=True)
    activations = [vision.hidden_states[i + 1] for i in model.extract_layers]
    cond = model.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
    cond = getattr(cond, "pooler_output", cond)
    return model.decoder(activations, cond).logits


def reference_step(model, mode: str, batch: dict[str, np.ndarray], *, device: str, amp: bool,
                   compile_model: bool = False) -> Callable[[], Any]:
    """A zero-argument PyTorch step of ``mode`` (inference | frozen | full) on ``batch``."""
    import torch

    t = torch_steps.to_torch(batch, device)
    if mode == "inference":
        model.eval()
        fwd = torch.compile(model) if compile_model else model

        def infer():
            with torch.inference_mode(), torch_steps.autocast(device, amp):
                return fwd(pixel_values=t["pixel_values"], input_ids=t["input_ids"],
                           attention_mask=t["attention_mask"]).logits
        return infer
    if mode not in ("frozen", "full"):
        raise ValueError(f"unknown mode {mode!r}")
    model.train()
    model.clip.requires_grad_(mode == "full")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
    if mode == "frozen":
        forward = lambda: model(pixel_values=t["pixel_values"], input_ids=t["input_ids"],
                                attention_mask=t["attention_mask"]).logits
    else:
        forward = lambda: full_forward(model, t["pixel_values"], t["input_ids"], t["attention_mask"])
    loss_of = lambda: soft_dice(forward(), t["mask"])
    if compile_model:
        loss_of = torch.compile(loss_of)
    return torch_steps.train_step(loss_of, params, opt, grad_clip=GRAD_CLIP, device=device, amp=amp)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=352)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--variant", default="base")
    p.add_argument("--out", default=None, help="results root (default: print only)")
    a = p.parse_args(argv)
    from medvlsm_jax.bench import bench

    args = ["models", "--models", "clipseg", "--variant", a.variant, "--modes", "inference", "--batch",
            str(a.batch), "--size", str(a.size), "--iters", str(a.iters), "--warmup", str(a.warmup),
            "--dtypes", a.dtype, "--torch"] + (["--out", a.out] if a.out else ["--no-write"])
    bench.main(args)


if __name__ == "__main__":
    main()
