"""BiomedCLIPSeg and BiomedCLIPSeg-D finetuning (BiomedCLIP encoders + CLIPSeg decoder).

``--config=configs/biomedclipseg.py:dataset=kvasir_polyp,prompt=p3,recipe=released,variant=d``
``--config.model.init=<folder>`` (``medvlsm-convert biomedclipseg SRC DST``, with
``--decoder CLIPSEG_DIR`` for BiomedCLIPSeg-D); the folder also holds the BERT vocabulary.

Variants: ``base`` (BiomedCLIPSeg, fresh decoder), ``d`` (BiomedCLIPSeg-D, decoder from CLIPSeg),
``corrected`` (taps at ViT blocks 3/6/9 instead of medvlsm's 4/7/10) and ``tiny``; any field
with ``--config.model.overrides.<field>=...`` (e.g. ``extract_layers='(3, 6, 9)'``).

* ``paper``: the CLIPSeg recipe of §3.4 (the same decoder; Adam, lr 1e-3 constant, no weight
  decay, batch 16).
* ``released`` (medvlsm ``configs/model/biomed_clipseg.yaml`` with ``scripts/default_configs.py``,
  which overrides the yaml's lr 2e-4 with 2e-3 at batch 128 for both variants): AdamW lr 2e-3,
  weight decay 1e-3, batch 128, ReduceLROnPlateau(0.1, 5) on the validation loss, clipping 0.5,
  mixed precision, early stopping patience 20 (``configs/callbacks/default.yaml``).

Both: 224², CLIP mean/std, BERT tokens (256), both encoders frozen (``freeze_encoder: true`` in
the model yaml), loss ``paper_faithful`` (MONAI ``DiceCELoss(1.0, 0.2)`` on one channel = soft
Dice; ``loss=corrected`` adds 0.2 BCE), early stopping on validation Dice (min delta 1e-4, at
least 10 epochs, at most 1000), seed 42. Zero-shot evaluation is refused: the decoder never saw
BiomedCLIP's features.
"""

from medvlsm_jax.config import base_config, parse_arg, recipe

DEFAULTS = {"dataset": "kvasir_polyp", "prompt": "p0", "recipe": "paper", "variant": "base",
            "loss": "paper_faithful", "image_size": ""}


def _paper(t):
    t.update(optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=16, schedule="constant",
             early_stopping_patience=50)


def _released(t):
    t.update(optimizer="adamw", lr=2e-3, weight_decay=1e-3, batch_size=128, schedule="plateau",
             plateau_factor=0.1, plateau_patience=5, grad_clip=0.5, mixed_precision=True,
             early_stopping_patience=20)


def get_config(arg: str | None = None):
    c = base_config("biomedclipseg", parse_arg(arg, DEFAULTS))
    c.model.freeze_encoder = True
    return recipe(c, {"paper": _paper, "released": _released})
