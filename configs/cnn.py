"""The image-only CNN baselines (the paper's Tables 3 and 4): segmentation_models_pytorch's Unet,
UnetPlusPlus and DeepLabV3Plus with a ResNet-50 encoder, trained as medvlsm trains them.

``--config=configs/cnn.py:model=unet,dataset=kvasir_polyp`` with

* ``model``: ``unet`` | ``unetpp`` | ``deeplabv3plus``;
* ``dataset``: one dataset (individual training), ``pooled_all`` or ``pooled_polyp``
  (endoscopy-pooled) — the Table 3 rows;
* ``eval=endoscopy``: evaluate on all six endoscopy sets (Kvasir-SEG, CVC-ClinicDB, BKAI, CVC-300,
  CVC-ColonDB, ETIS) after training on ``dataset`` — Table 4; any list works with
  ``--config.eval.datasets=a,b``.

Start from ImageNet weights as medvlsm does (``encoder_weights: imagenet``)::

    medvlsm-convert unet --encoder resnet50-0676ba61.pth converted/unet_imagenet
    python -m medvlsm_jax.main --config=configs/cnn.py:model=unet,dataset=kvasir_polyp \\
        --config.model.init=converted/unet_imagenet --workdir=runs/unet_kvasir

Recipe ``released`` — medvlsm ``configs/model/{unet,unetpp,deeplabv3plus}.yaml``,
``configs/experiment/*.yaml``, ``configs/callbacks/default.yaml``, ``configs/datamodule``: Adam
lr 1e-3 (no weight decay, no schedule), batch 16, gradient clipping 0.5, mixed precision
(``16-mixed``; bfloat16 compute here), at least 10 and at most 1000 epochs, early stopping on
validation Dice with patience 20 (min delta 1e-4), seed 42; the whole network is trained
(``freeze_encoder=False``), BatchNorm in train mode. Loss ``tuned_dice`` (medvlsm's
``TunedDiceLoss``; see :mod:`medvlsm_jax.train.losses`), threshold 0.5. Float32 training:
``--config.train.mixed_precision=False``.

Inputs: ImageNet mean/std at 256x256 for every dataset; why not torchvision's shorter-side
``Resize(256)`` of the released configs: :mod:`medvlsm_jax.data.shorter_side`. No prompt is used
(``data.prompt`` is ignored by image-only models).
"""

from medvlsm_jax.config import base_config, parse_arg, recipe

MODELS = ("unet", "unetpp", "deeplabv3plus")
ENDOSCOPY = ("kvasir_polyp", "clinicdb_polyp", "bkai_polyp", "cvc300_polyp", "colondb_polyp", "etis_polyp")
EVAL_SETS = {"": "", "endoscopy": ",".join(ENDOSCOPY)}
DEFAULTS = {"model": "unet", "dataset": "kvasir_polyp", "prompt": "", "recipe": "released", "variant": "base",
            "loss": "tuned_dice", "image_size": "", "eval": ""}


def _released(t):
    t.update(optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=16, schedule="constant", grad_clip=0.5,
             mixed_precision=True)


def get_config(arg: str | None = None):
    args = parse_arg(arg, DEFAULTS, extra_keys=("model", "eval"))
    if args["model"] not in MODELS:
        raise ValueError(f"model={args['model']!r}: choose from {', '.join(MODELS)}")
    if args["eval"] not in EVAL_SETS:
        raise ValueError(f"eval={args['eval']!r}: choose from {', '.join(k for k in EVAL_SETS if k)}")
    c = base_config(args["model"], args)
    c.model.freeze_encoder = False
    c.train.early_stopping_patience = 20
    c.train.early_stopping_min_delta = 1e-4
    c.eval.datasets = EVAL_SETS[args["eval"]]
    return recipe(c, {"released": _released})
