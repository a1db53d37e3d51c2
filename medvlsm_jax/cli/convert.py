"""``medvlsm-convert FAMILY SRC DST``: PyTorch weights -> a medvlsm-jax model folder.

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
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medvlsm-convert", description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=sorted(CONVERTERS))
    parser.add_argument("src", help="local PyTorch checkpoint (file or model folder)")
    parser.add_argument("dst", help="output folder (Orbax params, model.json, tokenizer/)")
    parser.add_argument("--variant", default=None, help="cris: model size of SRC ('base' = R50, 'tiny')")
    parser.add_argument("--pad-id", type=int, default=None,
                        help="cris: token padding id (49407 = medvlsm's HF tokens, default; 0 = original CRIS)")
    add_verbose(parser)
    args = parser.parse_args(argv)
    options = {k: v for k, v in (("variant", args.variant), ("pad_id", args.pad_id)) if v is not None}
    if options and args.family != "cris":
        parser.error(f"{', '.join('--' + k.replace('_', '-') for k in options)} only apply to cris")
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
