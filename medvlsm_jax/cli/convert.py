"""``medvlsm-convert FAMILY SRC DST``: PyTorch weights -> a medvlsm-jax model folder.

Needs the optional torch extra (``pip install 'medvlsm-jax[torch]'``); nothing else does.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# family -> module of weight_conversion with convert(src, dst) -> ConversionReport
CONVERTERS = {
    "clipseg": "weight_conversion.clipseg",
    "cris": "weight_conversion.cris",
    "unet": "weight_conversion.smp",
    "unetpp": "weight_conversion.smp",
    "deeplabv3plus": "weight_conversion.smp",
}
SMP_FAMILIES = ("unet", "unetpp", "deeplabv3plus")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medvlsm-convert", description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=sorted(CONVERTERS))
    parser.add_argument("src", nargs="?", help="local PyTorch checkpoint (file or model folder)")
    parser.add_argument("dst", help="output folder (Orbax params, model.json, tokenizer/)")
    parser.add_argument("--variant", default=None,
                        help="cris, unet, unetpp, deeplabv3plus: model size of SRC ('base', 'tiny')")
    parser.add_argument("--pad-id", type=int, default=None,
                        help="cris: token padding id (49407 = medvlsm's HF tokens, default; 0 = original CRIS)")
    parser.add_argument("--encoder", default=None, metavar="RESNET50_STATE_DICT",
                        help="unet, unetpp, deeplabv3plus: start from a torchvision/timm ResNet-50 ImageNet "
                             "state dict with a fresh decoder (instead of SRC)")
    parser.add_argument("--seed", type=int, default=None, help="initialisation of what the source does not cover")
    args = parser.parse_args(argv)
    options = {k: v for k, v in (("variant", args.variant), ("pad_id", args.pad_id), ("seed", args.seed))
               if v is not None}
    allowed = {"cris": {"variant", "pad_id", "seed"}, **{f: {"variant", "seed"} for f in SMP_FAMILIES}}
    allowed = allowed.get(args.family, set())
    if set(options) - allowed:
        bad = sorted(set(options) - allowed)
        parser.error(f"{', '.join('--' + k.replace('_', '-') for k in bad)} do not apply to {args.family}")
    if args.encoder is not None:
        if args.family not in SMP_FAMILIES:
            parser.error(f"--encoder only applies to {', '.join(SMP_FAMILIES)}")
        if args.src is not None:
            parser.error("give either SRC or --encoder, not both")
        args.src, options["encoder_only"] = args.encoder, True
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
    from weight_conversion.rules import ConversionError

    try:
        report = module.convert(args.src, args.dst, **options)
    except (ConversionError, FileNotFoundError) as e:
        print(f"medvlsm-convert: {e}", file=sys.stderr)
        return 1
    print(f"{args.family}: {report.summary()} -> {args.dst}")
    for key in report.kept_init:
        print(f"  left at initialisation: {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
