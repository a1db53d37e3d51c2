"""--list / --emit: one self-contained command per unit, a SLURM array script, a parallel line
with one GPU per process; and the store's per-run locks."""

from __future__ import annotations

import json
import multiprocessing
import os
import shlex
import subprocess

import pytest

from medvlsm_jax.cli import sweep as cli
from medvlsm_jax.sweep import emit, plans
from medvlsm_jax.sweep.runner import make_units
from medvlsm_jax.sweep.store import RunLock, Store


def _listed(capsys, argv):
    assert cli.main(argv) == 0
    return [line for line in capsys.readouterr().out.splitlines() if not line.startswith("note:")]


def test_list_prints_one_self_contained_command_per_unit(tmp_path, capsys):
    argv = ["smoke", "--workdir", str(tmp_path), "--set", "train.num_epochs=3", "--launcher", "python -m x"]
    lines = _listed(capsys, [*argv, "--list"])
    expansion = plans.expand("smoke", plans.PlanOptions(workdir=str(tmp_path), sets=("train.num_epochs=3",)))
    units = make_units(expansion)
    assert len(lines) == len(units) and len(units) < len(expansion.runs)  # packs and eval groups
    listed = []
    for line, unit in zip(lines, units):
        assert line.startswith("python -m x smoke ")
        args = cli.build_parser().parse_args(shlex.split(line)[3:])
        assert args.plan == "smoke" and args.workdir == str(tmp_path) and args.set == ["train.num_epochs=3"]
        # the command alone re-expands the same runs and regroups them into the same unit
        again = plans.expand(args.plan, cli.options(args))
        kept = plans.Expansion("smoke", [r for i, r in again.items() if i in args.only],
                               [i for i in again.ids if i in args.only], again.configs, [], 0)
        (regrouped,) = make_units(kept)
        assert regrouped.ids == unit.ids and regrouped.kind == unit.kind
        listed += list(args.only)
    assert sorted(listed) == sorted(expansion.ids)
    assert any(u.kind == "pack" and len(u.ids) == 3 for u in units)


def test_list_leaves_out_finished_runs(tmp_path, capsys):
    argv = ["smoke", "--workdir", str(tmp_path), "--list"]
    first = _listed(capsys, argv)
    expansion = plans.expand("smoke", plans.PlanOptions(workdir=str(tmp_path)))
    store = Store(str(tmp_path))
    unit0 = shlex.split(first[0])[-1].split(",")
    for rid in unit0:
        store.write_result(rid, {"id": rid})
    assert len(_listed(capsys, argv)) == len(first) - 1
    assert len(_listed(capsys, [*argv, "--all"])) == len(first)
    assert set(unit0) <= set(expansion.ids)


def test_emit_slurm_writes_an_array_over_the_commands(tmp_path, capsys):
    assert cli.main(["smoke", "--workdir", str(tmp_path), "--emit", "slurm"]) == 0
    base = tmp_path / "emit" / "sweep-smoke"
    commands = (base.with_suffix(".commands")).read_text().splitlines()
    script = base.with_suffix(".slurm").read_text()
    assert f"#SBATCH --array=0-{len(commands) - 1}%" in script and "#SBATCH --gres=gpu:1" in script
    assert str(base.with_suffix(".commands")) in script
    subprocess.run(["bash", "-n", str(base.with_suffix(".slurm"))], check=True)
    # the line a task runs is its command
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1"}
    picked = subprocess.run(["bash", "-c", f"sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {base}.commands"],
                            env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert picked == commands[1] and all(c.startswith("medvlsm-sweep smoke ") for c in commands)


def test_emit_parallel_pins_one_gpu_per_process(tmp_path, capsys):
    assert cli.main(["smoke", "--workdir", str(tmp_path), "--emit", "parallel", "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "parallel -j 2" in out and "--process-slot-var=SLOT" in out
    # run the xargs line on stand-in commands that report their GPU
    fake = tmp_path / "fake.commands"
    fake.write_text("".join(f"echo task{i} $CUDA_VISIBLE_DEVICES 'quoted arg'\n" for i in range(6)))
    line = emit.parallel_lines(str(fake), 2)["xargs"]
    got = subprocess.run(["bash", "-c", line], capture_output=True, text=True, check=True).stdout.split("\n")
    rows = sorted(r.split() for r in got if r)
    assert [r[0] for r in rows] == [f"task{i}" for i in range(6)]
    assert {r[1] for r in rows} <= {"0", "1"} and all(r[2:] == ["quoted", "arg"] for r in rows)


def _try_lock(path, queue):
    lock = RunLock(path)
    queue.put(lock.acquire())


def test_run_lock_is_exclusive_across_processes(tmp_path):
    lock = RunLock(str(tmp_path / "run"))
    assert lock.acquire()
    assert json.loads(lock.holder())["pid"] == os.getpid()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_try_lock, args=(str(tmp_path / "run"), queue))
    p.start()
    p.join(60)
    assert queue.get(timeout=5) is False
    lock.release()
    p = ctx.Process(target=_try_lock, args=(str(tmp_path / "run"), queue))
    p.start()
    p.join(60)
    assert queue.get(timeout=5) is True


def test_index_updates_merge(tmp_path):
    store = Store(str(tmp_path))
    store.update_index({"a": {"status": "pending", "model": "clipseg"}})
    store.update_index({"a": {"status": "done"}, "b": {"status": "failed"}})
    runs = store.index()["runs"]
    assert runs == {"a": {"status": "done", "model": "clipseg"}, "b": {"status": "failed"}}


def test_only_with_an_unknown_id_fails(tmp_path, capsys):
    assert cli.main(["smoke", "--workdir", str(tmp_path), "--only", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("n", [0])
def test_slurm_script_refuses_an_empty_plan(n):
    with pytest.raises(ValueError, match="nothing to emit"):
        emit.slurm_script("x", "c", n, "s", "l")


def test_a_run_whose_data_is_not_built_fails_at_once_with_the_build_command(tmp_path, capsys):
    rc = cli.main(["zeroshot", "--workdir", str(tmp_path), "--data-dir", str(tmp_path / "tfds"), "--models",
                   "clipseg", "--datasets", "busi", "--prompts", "p1", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 1 and "not built" in out and "medvlsm-data build busi" in out
    (rid,) = Store(str(tmp_path)).index()["runs"]
    assert "medvlsm-data build busi" in json.loads((tmp_path / "runs" / rid / "error.json").read_text())["error"]
