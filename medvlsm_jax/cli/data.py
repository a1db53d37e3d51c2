"""``medvlsm-data``: build the TFDS datasets (no TensorFlow) and inspect the registry.

Examples::

    medvlsm-data list [--data_dir DIR]
    medvlsm-data info kvasir_polyp                 # source, access conditions, layout
    medvlsm-data build kvasir_polyp --manual_dir ~/medvlsm --data_dir ~/medvlsm_data/tfds
    medvlsm-data build all --manual_dir ~/medvlsm   # the 11 paper datasets
    medvlsm-data synthetic --out ~/medvlsm_synth    # generate + build both synthetic sets
    medvlsm-data mimic --pairs pairs.csv --out ~/medvlsm   # MIMIC-CXR lungs + reports (appendix F.2)

Builds are atomic (a failed build, e.g. ``--overwrite`` with a broken source, leaves the
existing build as it was) and report every problem of a source at once. Errors are one line
with exit code 2 (``--verbose`` or ``MEDVLSM_VERBOSE=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Sequence

from medvlsm_jax.cli.common import add_verbose, guard
from medvlsm_jax.data.errors import DataError
from medvlsm_jax.data.registry import DATASETS, PAPER_DATASETS, POOLED, SPECS, members


def _expand(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        out += PAPER_DATASETS if name == "all" else members(name)
    return list(dict.fromkeys(out))


def _cmd_list(args: argparse.Namespace) -> None:
    from medvlsm_jax.data.sources import is_built, resolve_data_dir  # noqa: PLC0415

    data_dir = resolve_data_dir(args.data_dir)
    print(f"data dir: {data_dir}")
    print(f"{'id':>2}  {'name':<16} {'prompts':<8} {'splits':<16} built")
    for i, name in enumerate(DATASETS):
        spec = SPECS[name]
        built = is_built(name, data_dir)
        kind = " (test only)" if spec.test_only else ""
        print(f"{i:>2}  {name:<16} p0..p{spec.num_prompts - 1:<4} "
              f"{','.join(spec.splits):<16} {'yes' if built else 'no'}{kind}")
    for name, parts in POOLED.items():
        print(f"    {name:<16} = {' + '.join(parts)}")


def _cmd_info(args: argparse.Namespace) -> None:
    from medvlsm_jax.data.builders import builder_class  # noqa: PLC0415

    for name in _expand(args.datasets):
        print(builder_class(name).MANUAL_DOWNLOAD_INSTRUCTIONS, end="\n\n")


def _build(names: Sequence[str], manual_dir: str | None, data_dir: str | None,
           overwrite: bool) -> None:
    import tensorflow_datasets as tfds  # noqa: PLC0415

    from medvlsm_jax.data.sources import build_dataset  # noqa: PLC0415

    tfds.disable_progress_bar()
    for name in names:
        builder = build_dataset(name, manual_dir=manual_dir, data_dir=data_dir,
                                overwrite=overwrite)
        counts = ", ".join(f"{s}={v.num_examples}" for s, v in sorted(builder.info.splits.items()))
        print(f"{name}: {counts} -> {builder.data_dir}")


def _cmd_build(args: argparse.Namespace) -> None:
    _build(_expand(args.datasets), args.manual_dir, args.data_dir, args.overwrite)


def _cmd_synthetic(args: argparse.Namespace) -> None:
    names = ["synthetic_polyp", "synthetic_us"] if args.name == "all" else [args.name]
    out = pathlib.Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder for the generated images")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise DataError(f"--out {out} is not empty; give an empty or new folder, pass --overwrite to "
                        f"regenerate {' and '.join(names)} there, or build what it holds with: "
                        f"medvlsm-data build {' '.join(names)} --manual_dir {out}")
    if not args.overwrite:
        _build(names, out, args.data_dir, False)
        return
    # --overwrite: regenerate each set; its previous files are restored if the build fails
    for name in names:
        old = out / name
        aside = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}-previous-", dir=out)) if old.exists() else None
        if aside is not None:
            old.rename(aside / name)
        try:
            _build([name], out, args.data_dir, True)
        except BaseException:
            if aside is not None:
                shutil.rmtree(old, ignore_errors=True)
                (aside / name).rename(old)
            raise
        finally:
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)


def _cmd_mimic(args: argparse.Namespace) -> None:
    from medvlsm_jax.data.reports import write_mimic_annotations  # noqa: PLC0415

    sizes = write_mimic_annotations(args.pairs, args.out, policy=args.policy, max_length=args.max_length,
                                    seed=args.seed, copy=not args.symlink)
    print(f"mimic_cxr_lung: {', '.join(f'{k}={v}' for k, v in sizes.items())} -> {args.out}/mimic_cxr_lung; "
          f"now: medvlsm-data build mimic_cxr_lung --manual_dir {args.out}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medvlsm-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_verbose(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    data_dir = dict(default=None, help="TFDS data dir (default $MEDVLSM_DATA_DIR or "
                                       "~/medvlsm_data/tfds)")

    p = sub.add_parser("list", help="datasets, splits, prompt keys, build status")
    p.add_argument("--data_dir", "--data-dir", **data_dir)
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="source, access conditions and layout of datasets")
    p.add_argument("datasets", nargs="+", help="names, pooled names or 'all'")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("build", help="build datasets from the medvlsm layout")
    p.add_argument("datasets", nargs="+", help="names, pooled names or 'all'")
    p.add_argument("--manual_dir", "--manual-dir", default=None,
                   help="medvlsm root holding <dataset>/{images,masks,anns} "
                        "(default <data_dir>/downloads/manual)")
    p.add_argument("--data_dir", "--data-dir", **data_dir)
    p.add_argument("--overwrite", action="store_true",
                   help="rebuild existing datasets (the old build stays until the new one succeeds)")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("synthetic", help="generate and build the synthetic datasets")
    p.add_argument("--out", required=True, help="folder for the generated medvlsm layout")
    p.add_argument("--name", choices=["all", "synthetic_polyp", "synthetic_us"], default="all")
    p.add_argument("--data_dir", "--data-dir", **data_dir)
    p.add_argument("--overwrite", "--force", action="store_true",
                   help="regenerate into a non-empty --out and rebuild existing datasets")
    p.set_defaults(func=_cmd_synthetic)

    p = sub.add_parser("mimic", help="MIMIC-CXR lungs + reports (appendix F.2) into the medvlsm layout")
    p.add_argument("--pairs", required=True, help="CSV with columns image, mask, report[, subject]")
    p.add_argument("--out", required=True, help="manual dir to write <out>/mimic_cxr_lung into")
    p.add_argument("--policy", choices=["impression_first", "truncate"], default="impression_first",
                   help="long-report policy (medvlsm_jax.data.reports)")
    p.add_argument("--max-length", type=int, default=77, help="text context in tokens (CLIP: 77)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patient split")
    p.add_argument("--symlink", action="store_true", help="link images and masks instead of copying")
    p.set_defaults(func=_cmd_mimic)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medvlsm-data`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    return guard("medvlsm-data", lambda: args.func(args), argv)


if __name__ == "__main__":
    sys.exit(main())
