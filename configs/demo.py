"""Quick start: a small model trained from scratch on the synthetic set.

``python -m medvlsm_jax.main --config=configs/demo.py --workdir=runs/demo``

Builds ``synthetic_polyp`` (generated locally) on first use, trains the whole model (encoders
unfrozen, random init) at low resolution for a few minutes on CPU cores, evaluates the test
split and writes overlays, masks, ``per_image.csv`` and a results table under
``<workdir>/eval``.

``model=`` picks the architecture (``--config=configs/demo.py:model=biomedclipseg``):

* ``clipseg`` (default): a small CLIPSeg (CLIP ViT + CLIP text tower + the CLIPSeg decoder), 64².
* ``biomedclipseg``: a tiny BiomedCLIPSeg (timm-style ViT + BERT + the CLIPSeg decoder) at 64²
  with patch 8, tokenised by the bundled demo WordPiece vocabulary (``vocab="demo"``; no
  BiomedCLIP download).
* ``unet``: a tiny UNet (ResNet-style encoder; image-only: the prompt is not used), 64².
"""

from medvlsm_jax.config import base_config, parse_arg

MODELS = ("clipseg", "biomedclipseg", "unet")
DEFAULTS = {"model": "clipseg", "dataset": "synthetic_polyp", "prompt": "p1", "recipe": "paper", "variant": "tiny",
            "loss": "corrected", "image_size": "64"}


def get_config(arg: str | None = None):
    args = parse_arg(arg, DEFAULTS, extra_keys=("model",))
    model = args["model"]
    if model not in MODELS:
        raise ValueError(f"model={model!r}: choose from {', '.join(MODELS)}")
    if model == "biomedclipseg":  # its ViT takes exactly cfg.image_size: the size is a model setting
        args["image_size"] = ""
    c = base_config(model, args)
    c.model.freeze_encoder = False
    if model == "clipseg":
        c.model.overrides.update(patch_size=8, pretrain_image_size=64, vision_hidden_size=64,
                                 vision_intermediate_size=128, decoder_intermediate_size=64, reduce_dim=32,
                                 use_complex_transposed_convolution=False)  # its 2 x (p//4) upsampling fits p=16 only
    elif model == "biomedclipseg":
        c.model.overrides.update(image_size=64, patch_size=8, vision_width=64, vision_mlp_dim=128,
                                 use_complex_transposed_convolution=False)
    c.train.update(optimizer="adam", lr=1e-3, batch_size=16, num_epochs=40, min_epochs=10,
                   early_stopping_patience=10, cache="off")
    c.eval.update(batch_size=16, overlays=8)
    return c
