"""CLIPSeg (``CIDAS/clipseg-rd64-refined``) finetuning.

``--config=configs/clipseg.py:dataset=kvasir_polyp,prompt=p3,recipe=paper,variant=base``

* ``paper`` (§3.4): Adam, lr 1e-3 constant, no weight decay, batch 16.
* ``released`` (medvlsm scripts/configs): AdamW lr 2e-3, weight decay 1e-3, batch 128,
  ReduceLROnPlateau(factor 0.1, patience 5) on the validation loss, gradient clipping 0.5,
  mixed precision (bfloat16 compute here).

Both: early stopping on validation Dice (patience 50, min delta 1e-4, at least 10 epochs, at
most 1000), seed 42, both CLIP encoders frozen (``model.freeze_encoder=False`` for a full
finetune), loss ``paper_faithful`` (MONAI single-channel DiceCE = soft Dice; ``loss=corrected``
for Dice + 0.2 BCE). Start from converted weights with ``--config.model.init=<folder>``.
"""

from medvlsm_jax.config import base_config, parse_arg, recipe

DEFAULTS = {"dataset": "kvasir_polyp", "prompt": "p0", "recipe": "paper", "variant": "base",
            "loss": "paper_faithful", "image_size": ""}


def _paper(t):
    t.update(optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=16, schedule="constant")


def _released(t):
    t.update(optimizer="adamw", lr=2e-3, weight_decay=1e-3, batch_size=128, schedule="plateau",
             plateau_factor=0.1, plateau_patience=5, grad_clip=0.5, mixed_precision=True)


def get_config(arg: str | None = None):
    c = base_config("clipseg", parse_arg(arg, DEFAULTS))
    c.train.early_stopping_patience = 50
    return recipe(c, {"paper": _paper, "released": _released})
