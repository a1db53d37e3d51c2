"""Real multi-process training on localhost: two processes with one CPU device each (gloo
collectives, ``--coordinator_address/--num_processes/--process_id``) train, checkpoint, export and
evaluate exactly as one process with two simulated devices; a kill -9 of one process followed by
a relaunch of both resumes to the uninterrupted result.

Every run is a subprocess with a timeout. The runs share a persistent compilation cache, so the
relaunch after the kill does not compile again.
"""

from __future__ import annotations

import filecmp
import math
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.train.conftest import SIZES, tiny_data_dir  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPOCHS, BATCH = 4, 4
STEPS = EPOCHS * math.ceil(SIZES["train"] / BATCH)
TIMEOUT = 420  # seconds per launch (a loaded CI machine is many times slower than a quiet one)


def _cmd(data_dir: str, workdir: pathlib.Path, *extra: str) -> list[str]:
    """The tiny CLIPSeg (frozen encoders, feature cache on) for a few epochs."""
    return [sys.executable, "-m", "medvlsm_jax.main", f"--workdir={workdir}",
            "--config=configs/clipseg.py:dataset=synthetic_polyp,prompt=p2,variant=tiny,image_size=32,loss=corrected",
            f"--config.data.data_dir={data_dir}", f"--config.train.batch_size={BATCH}", "--config.train.lr=3e-3",
            f"--config.train.num_epochs={EPOCHS}", "--config.train.min_epochs=1", "--config.train.progress=false",
            "--config.train.checkpoint_every_steps=1", f"--config.eval.batch_size={BATCH}", "--config.eval.overlays=2",
            *extra]


def _env(cache: pathlib.Path, devices: int) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(data_dir: str, workdir: pathlib.Path, cache: pathlib.Path, n: int, tag: str) -> list[subprocess.Popen]:
    """``n`` processes with one device each (``n == 1``: one process with two devices)."""
    workdir.parent.mkdir(parents=True, exist_ok=True)
    if n == 1:
        group = [[]]
        env = _env(cache, 2)
    else:
        port = _free_port()
        group = [[f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={n}", f"--process_id={i}"]
                 for i in range(n)]
        env = _env(cache, 1)
    procs = []
    for i, flags in enumerate(group):
        log = open(workdir.parent / f"{workdir.name}.{tag}.p{i}.log", "w")  # noqa: SIM115
        procs.append(subprocess.Popen(_cmd(data_dir, workdir, *flags), cwd=ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
        procs[-1].log_path = log.name
    return procs


def _tail(proc: subprocess.Popen) -> str:
    return pathlib.Path(proc.log_path).read_text()[-3000:]


def _wait(procs: list[subprocess.Popen], timeout: float = TIMEOUT) -> None:
    """Every process exits 0 within ``timeout``; otherwise all are killed and the test fails."""
    deadline = time.time() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(deadline - time.time(), 1))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("a run timed out (collectives hung?):\n" + "\n---\n".join(_tail(p) for p in procs))
    bad = [p for p in procs if p.returncode != 0]
    assert not bad, "\n---\n".join(f"exit {p.returncode}:\n{_tail(p)}" for p in bad)


def _restore(path: pathlib.Path) -> dict[str, np.ndarray]:
    """An Orbax item as numpy arrays on this process's device, whatever topology wrote it."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata(path)
        tree = getattr(meta, "item_metadata", meta)
        tree = getattr(tree, "tree", tree)
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), dict(tree))
        return jax.tree.map(np.asarray, ckptr.restore(path, target))


def _max_diff(a: dict, b: dict) -> float:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) and len(la) > 10
    return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) for x, y in zip(la, lb))


def _final_state(workdir: pathlib.Path) -> dict[str, np.ndarray]:
    return _restore(workdir / "checkpoints" / "latest" / str(STEPS) / "state")


def _latest_step(workdir: pathlib.Path) -> int:
    d = workdir / "checkpoints" / "latest"
    return max((int(p.name) for p in d.iterdir() if p.name.isdigit()), default=0) if d.is_dir() else 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data_dir):  # noqa: F811
    """The uninterrupted runs, side by side: one process x two devices, two processes x one device."""
    root = tmp_path_factory.mktemp("multiprocess")
    out = {"root": root, "cache": root / "jax_cache", "one": root / "one", "two": root / "two"}
    procs = _launch(tiny_data_dir, out["one"], out["cache"], 1, "run") + _launch(tiny_data_dir, out["two"],
                                                                                out["cache"], 2, "run")
    _wait(procs)
    return out


def test_two_processes_train_and_evaluate_as_one_process_with_two_devices(runs):
    one, two = runs["one"], runs["two"]
    diff = _max_diff(_final_state(one), _final_state(two))
    assert diff <= 1e-5, f"final parameters differ by {diff}"
    assert _max_diff(_restore(one / "export" / "params"), _restore(two / "export" / "params")) <= 1e-5
    # every test image scored once, in the same order, with the same figures
    rows_one = (one / "eval" / "per_image.csv").read_text().splitlines()
    rows_two = (two / "eval" / "per_image.csv").read_text().splitlines()
    assert len(rows_one) == SIZES["test"] + 1 and rows_one == rows_two
    assert (one / "eval" / "results.json").read_text() == (two / "eval" / "results.json").read_text()
    # masks written once by the process that scored them; overlays and reports by process 0 only
    masks = one / "eval" / "synthetic_polyp" / "masks"
    names = sorted(os.listdir(masks))
    assert len(names) == SIZES["test"]
    assert filecmp.cmpfiles(masks, two / "eval" / "synthetic_polyp" / "masks", names, shallow=False)[0] == names
    overlays = sorted(os.listdir(two / "eval" / "synthetic_polyp" / "overlays"))
    assert overlays == sorted(os.listdir(one / "eval" / "synthetic_polyp" / "overlays")) and len(overlays) == 2
    assert not [p for p in (two / "eval").rglob(".rows-*")]  # the gather's scratch files are gone
    # logs name the process
    logs = [(runs["root"] / f"two.run.p{i}.log").read_text() for i in range(2)]
    assert "[process 0/2] epoch 4:" in logs[0] and "[process 1/2] epoch 4:" in logs[1]
    assert "results table" in logs[0] and "results table" not in logs[1]


def test_kill_one_process_then_relaunch_both_resumes(runs, tiny_data_dir):  # noqa: F811
    workdir, cache = runs["root"] / "killed", runs["cache"]
    procs = _launch(tiny_data_dir, workdir, cache, 2, "first")
    deadline = time.time() + TIMEOUT
    while _latest_step(workdir) < 3 and time.time() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    assert procs[1].wait() == -signal.SIGKILL
    stopped_at = _latest_step(workdir)
    # the survivor's next collective fails ("connection closed by peer"); it then waits for the
    # coordination service's heartbeat timeout before exiting, so do what a launcher does: stop it
    procs[0].kill()
    procs[0].wait()
    assert 3 <= stopped_at < STEPS, f"the run must be killed mid-training (latest step {stopped_at})"
    _wait(_launch(tiny_data_dir, workdir, cache, 2, "relaunch"))
    assert f"resumed from {workdir}/checkpoints/latest" in (runs["root"] / "killed.relaunch.p1.log").read_text()
    a, b = _final_state(runs["two"]), _final_state(workdir)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert ((runs["two"] / "eval" / "per_image.csv").read_text()
            == (workdir / "eval" / "per_image.csv").read_text())


def test_resuming_with_another_process_count_is_an_error(runs, tiny_data_dir, tmp_path):  # noqa: F811
    from medvlsm_jax.config import load_config
    from medvlsm_jax.train import loop
    from medvlsm_jax.train.run import build_run

    shutil.copytree(runs["two"] / "checkpoints", tmp_path / "checkpoints")
    config = load_config("clipseg:dataset=synthetic_polyp,prompt=p2,variant=tiny,image_size=32,loss=corrected")
    config.data.data_dir = tiny_data_dir
    config.train.update(batch_size=BATCH, num_epochs=EPOCHS + 1, min_epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"was written by 2 processes; resume it with 2 \(its data-iterator"):
        loop.train(build_run(config), str(tmp_path))
