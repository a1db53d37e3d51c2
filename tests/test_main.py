"""The command line: kill -9 mid-run then rerun resumes bit for bit; eval mode; early errors."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.train.conftest import SIZES, tiny_data_dir  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 4
STEPS = EPOCHS * SIZES["train"] // 2


def _cmd(data_dir, workdir, *extra, mode="train"):
    return [sys.executable, "-m", "medvlsm_jax.main", f"--workdir={workdir}", f"--mode={mode}",
            "--config=configs/clipseg.py:dataset=synthetic_polyp,prompt=p2,variant=tiny,image_size=32,loss=corrected",
            f"--config.data.data_dir={data_dir}", "--config.train.batch_size=2", f"--config.train.num_epochs={EPOCHS}",
            "--config.train.min_epochs=1", "--config.train.checkpoint_every_steps=1", "--config.train.progress=false",
            "--config.eval.batch_size=2", "--config.eval.after_training=false", "--config.eval.hd95=false", *extra]


def _env(**extra):
    return {**os.environ, "PYTHONPATH": ROOT, **extra}


def _final_state(workdir):
    path = os.path.join(workdir, "checkpoints", "latest", str(STEPS), "state")
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(path)


def _latest_step(workdir):
    d = os.path.join(workdir, "checkpoints", "latest")
    steps = [int(n) for n in os.listdir(d) if n.isdigit()] if os.path.isdir(d) else []
    return max(steps, default=0)


def test_kill_and_rerun_resumes_bit_for_bit(tiny_data_dir, tmp_path):  # noqa: F811
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_cmd(tiny_data_dir, full), check=True, cwd=ROOT, env=_env(), timeout=300,
                   capture_output=True)
    proc = subprocess.Popen(_cmd(tiny_data_dir, killed), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _latest_step(killed) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    stopped_at = _latest_step(killed)
    assert 3 <= stopped_at < STEPS, "the run must be killed mid-training"
    subprocess.run(_cmd(tiny_data_dir, killed), check=True, cwd=ROOT, env=_env(), timeout=300, capture_output=True)
    a, b = _final_state(full), _final_state(killed)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    # eval mode on the finished run
    res = subprocess.run(_cmd(tiny_data_dir, killed, mode="eval"), cwd=ROOT, env=_env(), timeout=300,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| synthetic_polyp | 4 |" in res.stdout
    assert os.path.exists(killed / "eval" / "per_image.csv")


def test_indivisible_batch_is_a_clear_error_on_several_devices(tiny_data_dir, tmp_path):  # noqa: F811
    res = subprocess.run(_cmd(tiny_data_dir, tmp_path, "--config.train.batch_size=3"), cwd=ROOT, timeout=120,
                         env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"), capture_output=True, text=True)
    assert res.returncode != 0
    assert "train.batch_size=3 is not divisible by the 2 devices" in res.stderr


@pytest.mark.parametrize("arg,match", [("dataset=nope", "unknown dataset 'nope'"),
                                       ("colour=red", "config argument 'colour=red'")])
def test_bad_config_argument(tmp_path, arg, match):
    res = subprocess.run([sys.executable, "-m", "medvlsm_jax.main", f"--workdir={tmp_path}",
                          f"--config=configs/clipseg.py:variant=tiny,{arg}"], cwd=ROOT, env=_env(), timeout=120,
                         capture_output=True, text=True)
    assert res.returncode != 0 and match in res.stderr
