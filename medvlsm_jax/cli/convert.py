"""``medvlsm-convert FAMILY SRC DST``: PyTorch weights -> a medvlsm-jax model folder.

``clipseg``: a transformers CLIPSeg folder; ``cris``: a CRIS checkpoint; ``biomedclipseg``: an
open_clip BiomedCLIP folder (``--decoder CLIPSEG_DIR`` for BiomedCLIPSeg-D, ``--checkpoint CKPT``
for a model trained with medvlsm); ``unet``, ``unetpp``, ``deeplabv3plus``: a segmentation_models_pytorch
checkpoint (state dict, ``save_pretrained`` folder or Lightning ``.ckpt``), or ``--encoder`` with a
ResNet-50 ImageNet state dict for a fresh decoder.

Needs the optional torch extra (``pip install 'medvlsm-jax[torch]'``); nothing else does.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from medvlsm_jax.cli.common import add_verbose, guard

# family -> module of medvlsm_jax.conversion with convert(src, dst) -> ConversionReport
CONVERTERS = {
    "clipseg": "medvlsm_jax.conversion.clipseg",
    "cris": "medvlsm_jax.conversion.cris",
    "biomedclipseg": "medvlsm_jax.conversion.biomedclipseg",
    "unet": "medvlsm_jax.conversion.smp",
    "unetpp": "medvlsm_jax.conversion.smp",
    "deeplabv3plus": "medvlsm_jax.conversion.smp",
}
SMP_FAMILIES = ("unet", "unetpp", "deeplabv3plus")
# options -> the families they apply to
FAMILY_OPTIONS = {"variant": ("cris", *SMP_FAMILIES), "pad_id": ("cris",), "decoder": ("biomedclipseg",),
                  "checkpoint": ("biomedclipseg",), "seed": ("cris", "biomedclipseg", *SMP_FAMILIES),
                  "encoder": SMP_FAMILIES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medvlsm-convert", description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=sorted(CONVERTERS))
    parser.add_argument("src", nargs="?", help="local PyTorch checkpoint (file or model folder)")
    parser.add_argument("dst", help="output folder (Orbax params, model.json, tokenizer/)")
    parser.add_argument("--variant", default=None,
                        help="cris, unet, unetpp, deeplabv3plus: model size of SRC ('base', 'tiny')")
    parser.add_argument("--pad-id", type=int, default=None,
                        help="cris: token padding id (49407 = medvlsm's HF tokens, default; 0 = original CRIS)")
    parser.add_argument("--decoder", default=None,
                        help="biomedclipseg: a transformers CLIPSeg folder whose decoder initialises BiomedCLIPSeg-D")
    parser.add_argument("--checkpoint", default=None,
                        help="biomedclipseg: a model trained with medvlsm (Lightning .ckpt or state dict) whose "
                             "weights replace SRC's")
    parser.add_argument("--encoder", default=None, metavar="RESNET50_STATE_DICT",
                        help="unet, unetpp, deeplabv3plus: start from a torchvision/timm ResNet-50 ImageNet "
                             "state dict with a fresh decoder (instead of SRC)")
    parser.add_argument("--seed", type=int, default=None,
                        help="initialisation of what the source does not cover (fresh decoders)")
    add_verbose(parser)
    args = parser.parse_args(argv)
    options = {k: getattr(args, k) for k in FAMILY_OPTIONS if getattr(args, k) is not None}
    wrong = [k for k in options if args.family not in FAMILY_OPTIONS[k]]
    if wrong:
        parser.error("; ".join(f"--{k.replace('_', '-')} only applies to {', '.join(FAMILY_OPTIONS[k])}"
                               for k in wrong))
    if args.encoder is not None:
        if args.src is not None:
            parser.error("give either SRC or --encoder, not both")
        args.src, options["encoder_only"] = options.pop("encoder"), True
    if args.src is None:
        parser.error("SRC is required")
    if args.family in SMP_FAMILIES:
        options["family"] = args.family
    try:
        module = importlib.import_module(CONVERTERS[args.family])
    except ImportError as e:
        print(f"medvlsm-convert: {e}. Install the conversion extra: pip install 'medvlsm-jax[torch]'",
              file=sys.stderr)
        return 2

    def run() -> int:
        report = module.convert(args.src, args.dst, **options)
        print(f"{args.family}: {report.summary()} -> {args.dst}")
        for key in report.kept_init:
            print(f"  left at initialisation: {key}")
        return 0

    return guard("medvlsm-convert", run, argv)


if __name__ == "__main__":
    sys.exit(main())
