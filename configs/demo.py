"""Quick start: a small CLIPSeg-architecture model trained from scratch on the synthetic set.

``python -m medvlsm_jax.main --config=configs/demo.py --workdir=runs/demo``

Builds ``synthetic_polyp`` (generated locally) on first use, trains the whole model (encoders
unfrozen, random init) at low resolution for a few minutes on CPU cores, evaluates the test
split and writes overlays, masks, ``per_image.csv`` and a results table under
``<workdir>/eval``.
"""

from medvlsm_jax.config import base_config, parse_arg

DEFAULTS = {"dataset": "synthetic_polyp", "prompt": "p1", "recipe": "paper", "variant": "tiny",
            "loss": "corrected", "image_size": "64"}


def get_config(arg: str | None = None):
    c = base_config("clipseg", parse_arg(arg, DEFAULTS))
    c.model.freeze_encoder = False
    c.model.overrides.update(patch_size=8, pretrain_image_size=64, vision_hidden_size=64, vision_intermediate_size=128,
                             decoder_intermediate_size=64, reduce_dim=32,
                             use_complex_transposed_convolution=False)  # its 2 x (p//4) upsampling fits p=16 only
    c.train.update(optimizer="adam", lr=1e-3, batch_size=16, num_epochs=40, min_epochs=10,
                   early_stopping_patience=10, cache="off")
    c.eval.update(batch_size=16, overlays=8)
    return c
