"""CRIS (CLIP RN50 + vision-language decoder) finetuning.

``--config=configs/cris.py:dataset=kvasir_polyp,prompt=p3,recipe=paper``

* ``paper`` (§3.4): Adam, lr 1e-6 for the CLIP encoders and 1e-5 for the rest, no weight
  decay, batch 16, dropout 0.2 (model default), BCE loss, threshold 0.35.
* ``released`` (medvlsm ``configs/model/cris.yaml``): AdamW lr 2e-5, weight decay 1e-3,
  batch 32, ReduceLROnPlateau(0.1, 5) on the validation loss, clipping 0.5, mixed precision,
  and ``DiceCELoss(lambda_dice=1.0, lambda_ce=0.2)`` on sigmoid outputs: loss
  ``paper_faithful`` (single-channel MONAI semantics, whose CE term is zero: the soft Dice).

``loss=...`` overrides the recipe's loss.

Both: the whole model is trained (``freeze_encoder=False``), early stopping on validation Dice
with patience 10 (min 10 epochs), seed 42.
"""

from medvlsm_jax.config import base_config, parse_arg, recipe

DEFAULTS = {"dataset": "kvasir_polyp", "prompt": "p0", "recipe": "paper", "variant": "base", "loss": "",
            "image_size": ""}


def _paper(t):
    t.update(optimizer="adam", lr=1e-5, lr_encoder=1e-6, weight_decay=0.0, batch_size=16, schedule="constant",
             loss=t.loss or "bce")


def _released(t):
    t.update(optimizer="adamw", lr=2e-5, weight_decay=1e-3, batch_size=32, schedule="plateau",
             plateau_factor=0.1, plateau_patience=5, grad_clip=0.5, mixed_precision=True,
             loss=t.loss or "paper_faithful", dice_weight=1.0, bce_weight=0.2)


def get_config(arg: str | None = None):
    c = base_config("cris", parse_arg(arg, DEFAULTS))
    c.model.freeze_encoder = False
    c.train.early_stopping_patience = 10
    return recipe(c, {"paper": _paper, "released": _released})
