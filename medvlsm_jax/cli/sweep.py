"""``medvlsm-sweep PLAN --workdir DIR``: the paper's experiment grid in one resumable command.

::

    medvlsm-sweep smoke --workdir runs/smoke                      # minutes on CPU
    medvlsm-sweep finetune --workdir runs/paper --data-dir ~/tfds --weights converted/
    medvlsm-sweep finetune --workdir runs/paper ... --list        # one command per run / pack
    medvlsm-sweep finetune --workdir runs/paper ... --emit slurm  # SLURM array script
    medvlsm-sweep finetune --workdir runs/paper ... --emit parallel --gpus 8
    medvlsm-report runs/paper                                     # tables, figures, HTML

Plans and run identity: :mod:`medvlsm_jax.sweep.plans`; execution, packing, skipping and locks:
:mod:`medvlsm_jax.sweep.runner`; the store: :mod:`medvlsm_jax.sweep.store`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from medvlsm_jax.sweep import emit, plans


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medvlsm-sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", choices=sorted(plans.PLANS), help="the plan to expand")
    p.add_argument("--workdir", required=True, help="the sweep's store: runs/<id>/, index.json")
    g = p.add_argument_group("expansion (part of every listed command)")
    g.add_argument("--data-dir", default="", help="built TFDS datasets (data.data_dir)")
    g.add_argument("--weights", default="", help="folder of converted models <weights>/<model>, used as model.init")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run (JSON values), e.g. --set train.num_epochs=5")
    g.add_argument("--models", type=_csv, default=(), help="restrict to these model labels")
    g.add_argument("--datasets", type=_csv, default=(), help="restrict to these datasets (training set)")
    g.add_argument("--prompts", type=_csv, default=(), help="restrict to these prompt keys")
    g.add_argument("--seeds", type=_csv, default=("42",), help="one run per seed (default 42)")
    g.add_argument("--swap-modes", type=_csv, default=("random_word",), help="swap modes of the swap plan")
    g.add_argument("--no-pack", action="store_true", help="train every run on its own (no packed runs)")
    g.add_argument("--max-pack", type=int, default=10, help="members per pack at most (default 10)")
    p.add_argument("--only", type=_csv, default=(), help="run ids to keep (what --list's commands use)")
    out = p.add_argument_group("listing instead of running")
    out.add_argument("--list", action="store_true", help="print one self-contained command per unit")
    out.add_argument("--all", action="store_true", help="with --list/--emit: include finished runs")
    out.add_argument("--emit", choices=("slurm", "parallel"), help="write a SLURM array script or a parallel line")
    out.add_argument("--gpus", type=int, default=1, help="--emit parallel: processes, one GPU each")
    out.add_argument("--launcher", default="medvlsm-sweep", help="how listed commands start the sweep")
    p.add_argument("--compile-cache", default=None,
                   help="JAX persistent compilation cache (default <workdir>/.jax-cache; 'off' to disable): "
                        "runs of one model share their compiled steps across processes and sweeps")
    p.add_argument("--quiet", action="store_true", help="less logging")
    return p


def _expansion_argv(args: argparse.Namespace) -> list[str]:
    """The options a listed command needs to expand the same runs."""
    argv = ["--workdir", os.path.abspath(args.workdir)]
    for flag, value in (("--data-dir", args.data_dir), ("--weights", args.weights)):
        if value:
            argv += [flag, os.path.abspath(value)]
    for item in args.set:
        argv += ["--set", item]
    for flag, values in (("--models", args.models), ("--datasets", args.datasets), ("--prompts", args.prompts)):
        if values:
            argv += [flag, ",".join(values)]
    if tuple(args.seeds) != ("42",):
        argv += ["--seeds", ",".join(args.seeds)]
    if tuple(args.swap_modes) != ("random_word",):
        argv += ["--swap-modes", ",".join(args.swap_modes)]
    if args.no_pack:
        argv.append("--no-pack")
    if args.max_pack != 10:
        argv += ["--max-pack", str(args.max_pack)]
    return argv


def options(args: argparse.Namespace) -> plans.PlanOptions:
    return plans.PlanOptions(
        workdir=os.path.abspath(args.workdir), data_dir=os.path.abspath(args.data_dir) if args.data_dir else "",
        weights=os.path.abspath(args.weights) if args.weights else "", sets=tuple(args.set),
        models=tuple(args.models), datasets=tuple(args.datasets), prompts=tuple(args.prompts),
        seeds=tuple(int(s) for s in args.seeds), swap_modes=tuple(args.swap_modes))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    from medvlsm_jax.sweep.runner import make_units, run_units  # noqa: PLC0415
    from medvlsm_jax.sweep.store import Store  # noqa: PLC0415

    opts = options(args)
    if args.compile_cache != "off" and not (args.list or args.emit):
        import jax  # noqa: PLC0415

        jax.config.update("jax_compilation_cache_dir",
                          args.compile_cache or os.path.join(os.path.abspath(args.workdir), ".jax-cache"))
    expansion = plans.expand(args.plan, opts)
    for note in expansion.notes:
        print(f"note: {note}")
    if args.only:
        unknown = sorted(set(args.only) - set(expansion.ids))
        if unknown:
            print(f"error: --only names runs plan {args.plan!r} does not have: {', '.join(unknown)}", file=sys.stderr)
            return 2
        keep = set(args.only)
        # a swap's train run stays in the expansion only as a dependency; keep just the listed runs
        expansion = plans.Expansion(expansion.plan, [s for i, s in expansion.items() if i in keep],
                                    [i for i in expansion.ids if i in keep], expansion.configs, expansion.notes,
                                    expansion.skipped)
    units = make_units(expansion, pack=not args.no_pack, max_pack=args.max_pack)
    store = Store(args.workdir)
    if args.list or args.emit:
        pending = [u for u in units if args.all or not all(store.is_done(i) for i in u.ids)]
        commands = [emit.command(args.launcher, args.plan, _expansion_argv(args), u.ids) for u in pending]
        if args.list:
            print("\n".join(commands))
        if args.emit:
            base = os.path.join(os.path.abspath(args.workdir), "emit", f"sweep-{args.plan}")
            cfile = emit.write_commands(base + ".commands", commands)
            if args.emit == "slurm":
                script = base + ".slurm"
                with open(script, "w") as f:
                    f.write(emit.slurm_script(args.plan, cfile, len(commands), script,
                                              os.path.join(os.path.dirname(base), "slurm-logs")))
                print(f"{len(commands)} unit(s): sbatch {script}")
            else:
                lines = emit.parallel_lines(cfile, args.gpus)
                with open(base + ".parallel.sh", "w") as f:
                    f.write("#!/bin/sh\n# GNU parallel:\n# " + lines["parallel"] + "\n# GNU xargs:\n"
                            + lines["xargs"] + "\n")
                print(f"{len(commands)} unit(s) in {cfile}; with {args.gpus} GPU(s):")
                print(lines["parallel"])
                print(lines["xargs"])
        return 0
    if args.plan == "smoke":
        built = plans.prepare_smoke_data(opts.data_dir or plans.smoke_data_dir(opts.workdir))
        if built:
            print(f"built the smoke plan's synthetic sets: {', '.join(built)}")
    print(f"plan {args.plan}: {len(expansion.runs)} run(s) in {len(units)} unit(s); store {store.workdir}")
    report = run_units(expansion, units, store)
    print(report.summary())
    for rid, err in report.failed.items():
        print(f"failed: {rid}: {err.splitlines()[0] if err else ''} (details: {store.run_dir(rid)}/error.json)")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
