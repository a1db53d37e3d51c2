"""``medvlsm-prompts``: medvlsm-style annotation files from images, masks and metadata.

    medvlsm-prompts DATASET --images DIR --masks DIR --out DIR [--metadata PATH]
                    [--split-file F | --seed N] [--allow-empty]
    medvlsm-prompts stats DATASET --anns DIR [--compare DIR [--compare-dataset NAME]]
    medvlsm-prompts check DATASET --anns DIR [--show N]

``stats`` prints the distribution of every attribute parsed from an annotation folder (next to
a second folder's with ``--compare``, e.g. the paper's files against a generated set);
``check`` parses every prompt and re-renders it with our templates, printing the identity rate
and the first mismatches.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from medvlsm_jax.cli.common import add_verbose, guard
from medvlsm_jax.promptgen import (DATASETS, attribute_distribution,
                                   generate_annotations, get_dataset, load_annotations,
                                   round_trip)

_ANN_SPLITS = ("train", "val", "test")


def _generate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="medvlsm-prompts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--images", type=pathlib.Path, required=True, help="folder of images")
    p.add_argument("--masks", type=pathlib.Path, required=True,
                   help="folder of masks (searched recursively; CAMUS: mask_1/, mask_2/, mask_3/)")
    p.add_argument("--out", type=pathlib.Path, required=True, help="output annotation folder")
    p.add_argument("--metadata", type=pathlib.Path,
                   help="CAMUS: folder of patientXXXX/Info_*.cfg; CheXlocalize: labels CSV")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--split-file", type=pathlib.Path,
                       help='JSON {"train": [image names], ...} or a folder of annotation files')
    group.add_argument("--seed", type=int, default=0, help="seed of the default split")
    p.add_argument("--allow-empty", action="store_true",
                   help="write the paper's 'no <class>' prompts for masks without foreground "
                        "(always on for the synthetic sets, whose images may show no lesion)")
    add_verbose(p)
    args = p.parse_args(argv)
    allow_empty = args.allow_empty or get_dataset(args.dataset).entry.synthetic
    splits = generate_annotations(args.dataset, args.images, args.masks, args.out,
                                  metadata=args.metadata, split=args.split_file, seed=args.seed,
                                  allow_empty=allow_empty)
    print(", ".join(f"{s}: {len(r)}" for s, r in splits.items()), f"records -> {args.out}")
    return 0


def _stats(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="medvlsm-prompts stats")
    add_verbose(p)
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--anns", type=pathlib.Path, required=True)
    p.add_argument("--compare", type=pathlib.Path, help="second annotation folder")
    p.add_argument("--compare-dataset", help="dataset of --compare (default: DATASET)")
    args = p.parse_args(argv)
    columns = [(str(args.anns), attribute_distribution(
        load_annotations(args.anns, _ANN_SPLITS), get_dataset(args.dataset).family))]
    if args.compare:
        other = get_dataset(args.compare_dataset or args.dataset).family
        columns.append((str(args.compare), attribute_distribution(
            load_annotations(args.compare, _ANN_SPLITS), other)))
    print(format_distributions(columns))
    return 0


def format_distributions(columns: list[tuple[str, dict]]) -> str:
    """Text table: per attribute and value, the share (and count) in each column."""
    lines = ["columns: " + " | ".join(f"[{i}] {name}" for i, (name, _) in enumerate(columns))]
    for attr in sorted(set().union(*(d for _, d in columns))):
        lines.append(f"\n{attr}")
        totals = [sum(d.get(attr, {}).values()) or 1 for _, d in columns]
        values = set().union(*(d.get(attr, {}) for _, d in columns))
        for value in sorted(values, key=lambda v: -sum(d.get(attr, {}).get(v, 0)
                                                       for _, d in columns)):
            cells = [f"{100 * d.get(attr, {}).get(value, 0) / t:6.1f}% "
                     f"({d.get(attr, {}).get(value, 0)})" for (_, d), t in zip(columns, totals)]
            lines.append(f"  {value[:40]:40s} " + "  ".join(f"{c:>16s}" for c in cells))
    return "\n".join(lines)


def _check(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="medvlsm-prompts check")
    add_verbose(p)
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--anns", type=pathlib.Path, required=True)
    p.add_argument("--show", type=int, default=5, help="mismatches to print")
    args = p.parse_args(argv)
    result = round_trip(load_annotations(args.anns, _ANN_SPLITS + ("testB",)),
                        get_dataset(args.dataset).family)
    print(f"{args.dataset}: {result.identical}/{result.strings} identical strings "
          f"({100 * result.rate:.2f} %), {len(result.mismatches)} mismatches")
    for img, key, real, mine in result.mismatches[:args.show]:
        print(f"  {img} {key}\n    released: {real!r}\n    rendered: {mine!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = {"stats": _stats, "check": _check}.get(argv[0] if argv else "", _generate)
    return guard("medvlsm-prompts", lambda: command(argv[1:] if command is not _generate else argv), argv)


if __name__ == "__main__":
    sys.exit(main())
