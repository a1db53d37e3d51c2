"""``medvlsm-report DIR [--out OUT] [--data-dir D]``: the paper's tables (markdown + CSV), Fig. 2
and Fig. 3 (PNG), best / worst overlays and one self-contained HTML report from the sweep store
in ``DIR`` (see :mod:`medvlsm_jax.report`)."""

from __future__ import annotations

import argparse
import sys

from medvlsm_jax.report import build_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="medvlsm-report", description=__doc__.split("\n")[0])
    p.add_argument("workdir", help="a medvlsm-sweep workdir")
    p.add_argument("--out", default=None, help="output folder (default <workdir>/report)")
    p.add_argument("--data-dir", default=None,
                   help="built datasets, for the overlays (default: each run's data.data_dir)")
    args = p.parse_args(argv)
    written = build_report(args.workdir, args.out, args.data_dir)
    print(f"tables: {written['markdown']} and {', '.join(written['tables'].values()) or 'no CSV (no runs)'}")
    for f in written["figures"]:
        print(f"figure: {f}")
    for n in written["notes"]:
        print(f"note: {n}")
    print(f"report: {written['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
