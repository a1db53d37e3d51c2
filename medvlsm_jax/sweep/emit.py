"""Run lists for schedulers: one self-contained command per unit, a SLURM array script, a
GNU-parallel / xargs line with one GPU per process.

Every command is ``<launcher> PLAN --workdir DIR <the expansion options> --only ID[,ID...]``:
it re-expands the same plan, keeps the listed runs (a pack's members regroup into the same
pack) and runs them with the same skipping, locking and store as a whole sweep, so the commands
can run in any order, on any host sharing the workdir, and any number of times.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

SLURM_TEMPLATE = """#!/bin/bash
# medvlsm-sweep {plan}: {n} unit(s), one per array task, one GPU each.
# Submit: sbatch {script}
#SBATCH --job-name=medvlsm-{plan}
#SBATCH --array=0-{last}%{concurrent}
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task={cpus}
#SBATCH --time={time}
#SBATCH --output={logs}/%A_%a.out
set -euo pipefail
CMD=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {commands})
echo "task $SLURM_ARRAY_TASK_ID on $(hostname): $CMD"
eval "$CMD"
"""


def command(launcher: str, plan: str, options: Sequence[str], ids: Sequence[str]) -> str:
    """The self-contained command of one unit."""
    return " ".join([launcher, shlex.join([plan, *options, "--only", ",".join(ids)])])


def write_commands(path: str, commands: Sequence[str]) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(c + "\n" for c in commands))
    return path


def slurm_script(plan: str, commands_file: str, n: int, script: str, logs: str, *, concurrent: int = 8,
                 cpus: int = 8, time: str = "24:00:00") -> str:
    """A SLURM array script running line ``SLURM_ARRAY_TASK_ID + 1`` of ``commands_file``."""
    if n < 1:
        raise ValueError("nothing to emit: every run of the plan is done")
    return SLURM_TEMPLATE.format(plan=plan, n=n, last=n - 1, concurrent=concurrent, cpus=cpus, time=time,
                                 logs=shlex.quote(logs), commands=shlex.quote(commands_file),
                                 script=shlex.quote(script))


def parallel_lines(commands_file: str, gpus: int) -> dict[str, str]:
    """Lines that run ``commands_file`` with ``gpus`` processes, each pinned to one GPU:
    GNU parallel (job slot ``{%}`` = 1..gpus) and GNU xargs (``--process-slot-var``: 0..gpus-1)."""
    f = shlex.quote(commands_file)
    return {
        "parallel": f"parallel -j {gpus} --lb 'export CUDA_VISIBLE_DEVICES=$(( {{%}} - 1 )); eval {{}}' :::: {f}",
        "xargs": (f"xargs -a {f} -d '\\n' -P {gpus} --process-slot-var=SLOT -I CMD "
                  "sh -c 'export CUDA_VISIBLE_DEVICES=$SLOT; eval \"$1\"' sh CMD"),
    }
