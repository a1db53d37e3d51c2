"""The command line: three kill -9 at random steps of one run (one of them followed by a damaged
newest checkpoint, one by the deleted latest folder) and the reruns finish bit for bit with the
uninterrupted run and the same metrics.jsonl; eval mode; one-line errors with exit code 2."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.train import faults
from tests.train.conftest import SIZES, tiny_data_dir  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 3
STEPS_PER_EPOCH = SIZES["train"] // 2
STEPS = EPOCHS * STEPS_PER_EPOCH
CONFIG = "configs/clipseg.py:dataset=synthetic_polyp,prompt=p2,variant=tiny,image_size=32,loss=corrected"


def _cmd(data_dir, workdir, *extra, mode="train"):
    return [sys.executable, "-m", "medvlsm_jax.main", f"--workdir={workdir}", f"--mode={mode}", f"--config={CONFIG}",
            f"--config.data.data_dir={data_dir}", "--config.train.batch_size=2", f"--config.train.num_epochs={EPOCHS}",
            "--config.train.min_epochs=1", "--config.train.checkpoint_every_steps=1", "--config.train.progress=false",
            "--config.train.log_every_steps=1", "--config.eval.batch_size=2", "--config.eval.after_training=false",
            "--config.eval.hd95=false", *extra]


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """One persistent XLA cache for this module's processes: every run after the first skips
    compilation (the executables are the same, so results are unchanged)."""
    return str(tmp_path_factory.mktemp("xla_cache"))


def _env(cache=None, **extra):
    env = {**os.environ, "PYTHONPATH": ROOT, **extra}
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    return env


def _final_state(workdir):
    path = os.path.join(workdir, "checkpoints", "latest", str(STEPS), "state")
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(path)


def _latest_step(workdir):
    d = os.path.join(workdir, "checkpoints", "latest")
    steps = [int(n) for n in os.listdir(d) if n.isdigit()] if os.path.isdir(d) else []
    return max(steps, default=0)


def _kill_at(cmd, env, workdir, target, log_path):
    """Starts ``cmd``, kill -9 once its newest checkpoint reaches ``target``; returns that step."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.time() + 300
        while _latest_step(workdir) < target and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, open(log_path).read()[-2000:]
    return _latest_step(workdir)


def test_three_kills_and_damaged_checkpoints_resume_bit_for_bit(tiny_data_dir, tmp_path, compile_cache):  # noqa: F811
    seed = int(os.environ.get("MEDVLSM_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    why = f"(MEDVLSM_KILL_SEED={seed})"
    env = _env(compile_cache)
    full, chaos = tmp_path / "full", tmp_path / "chaos"
    subprocess.run(_cmd(tiny_data_dir, full), check=True, cwd=ROOT, env=env, timeout=600, capture_output=True)
    # three random steps, one per stretch of the run; kill 2 is followed by damaging the newest
    # checkpoint, kill 3 (after epoch 2, so a best checkpoint exists) by deleting the latest folder
    targets = [rng.randint(2, STEPS_PER_EPOCH), rng.randint(STEPS_PER_EPOCH + 1, 2 * STEPS_PER_EPOCH - 1),
               rng.randint(2 * STEPS_PER_EPOCH + 1, STEPS - 2)]
    logs = [tmp_path / f"attempt{i}.log" for i in range(4)]
    damaged, stops = None, []
    for i, target in enumerate(targets):
        stopped = _kill_at(_cmd(tiny_data_dir, chaos), env, chaos, target, logs[i])
        stops.append(stopped)
        assert target <= stopped < STEPS, f"kill {i + 1} must land mid-training {why}"
        if i == 1:
            damaged = chaos / "checkpoints" / "latest" / str(stopped)
            faults.cut_in_half(damaged)
        if i == 2:
            shutil.rmtree(chaos / "checkpoints" / "latest")
    print(f"kill -9 after checkpoints {stops} of {STEPS} {why}")
    res = subprocess.run(_cmd(tiny_data_dir, chaos), cwd=ROOT, env=env, timeout=600, capture_output=True, text=True)
    logs[3].write_text(res.stderr)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = _final_state(full), _final_state(chaos)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=f"{k} {why}")
    # clean logs: the same metric rows as the uninterrupted run, each once
    assert (chaos / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text(), why
    # the damaged checkpoint: one line naming it, set aside; never a traceback or Orbax's noise
    attempt3 = logs[2].read_text()
    (line,) = [x for x in attempt3.splitlines() if "cannot be restored" in x]
    assert f"checkpoint {damaged} cannot be restored (state: " in line, why
    assert any(p.name.startswith(f"latest-{damaged.name}-") for p in (chaos / "checkpoints" / "damaged").iterdir())
    # the latest folder gone: resumed from the best checkpoint, not from scratch
    assert f"resumed from {chaos / 'checkpoints' / 'best'}" in logs[3].read_text(), why
    ours = {"checkpoint.py", "loop.py", "workdir.py", "writer.py"}
    for log in logs:
        text = log.read_text()
        for noise in ("Traceback", "Exception ignored", "TensorStore", "Event loop is closed"):
            assert noise not in text, f"{log.name}: {noise} {why}"
        # warnings and errors come from the trainer only (none from Orbax, asyncio, TFDS)
        sources = {m.group(1) for m in re.finditer(r"^[WE]\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\]", text, re.M)}
        assert sources <= ours, f"{log.name}: {sources - ours} {why}"
    # eval mode on the finished run
    res = subprocess.run(_cmd(tiny_data_dir, chaos, mode="eval"), cwd=ROOT, env=env, timeout=300,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| synthetic_polyp | 4 |" in res.stdout
    assert os.path.exists(chaos / "eval" / "per_image.csv")


def test_indivisible_batch_is_a_clear_error_on_several_devices(tiny_data_dir, tmp_path):  # noqa: F811
    res = subprocess.run(_cmd(tiny_data_dir, tmp_path, "--config.train.batch_size=3"), cwd=ROOT, timeout=120,
                         env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"), capture_output=True, text=True)
    assert res.returncode == 2
    assert "train.batch_size=3 is not divisible by the 2 devices" in res.stderr


@pytest.mark.parametrize("arg,match", [("dataset=nope", "unknown dataset 'nope'"),
                                       ("colour=red", "config argument 'colour=red'")])
def test_bad_config_argument(tmp_path, arg, match):
    res = subprocess.run([sys.executable, "-m", "medvlsm_jax.main", f"--workdir={tmp_path}",
                          f"--config=configs/clipseg.py:variant=tiny,{arg}"], cwd=ROOT, env=_env(), timeout=120,
                         capture_output=True, text=True)
    assert res.returncode == 2 and match in res.stderr


# --------------------------------------------------------------------------- one-line errors


def _recorded_workdir(data_dir, workdir, **train):
    """A workdir as a run leaves it, its config.json recording ``train`` changes to _cmd's."""
    from medvlsm_jax.config import load_config
    from medvlsm_jax.train import workdir as wd_lib

    c = load_config(CONFIG.split("/", 1)[1].replace(".py", ""))
    c.data.data_dir = data_dir
    c.train.update(batch_size=2, num_epochs=EPOCHS, min_epochs=1, checkpoint_every_steps=1, progress=False,
                   log_every_steps=1, **train)
    c.eval.update(batch_size=2, after_training=False, hd95=False)
    (workdir / "checkpoints" / "latest" / "3").mkdir(parents=True)
    wd_lib.record_config(str(workdir), c, {})


def _holder(workdir):
    code = ("import sys, time; from medvlsm_jax.train.workdir import WorkdirLock; "
            "WorkdirLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(workdir)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _damaged_checkpoints(workdir):
    import jax.numpy as jnp

    from medvlsm_jax.train import checkpoint as ckpt_lib

    ckpts = ckpt_lib.Checkpoints(str(workdir))
    for step in (1, 2):
        ckpts.save_latest(step, {"w": jnp.ones(3)}, {"step": step, "epoch": 0}, {})
    ckpts.close()
    for step in (1, 2):
        faults.zero_length(workdir / "checkpoints" / "latest" / str(step))


@pytest.mark.parametrize("case", ["unknown_key", "bad_flag", "workdir_is_a_file", "eval_without_checkpoint", "workdir_in_use",
                                  "config_drift", "no_restorable_checkpoint"])
def test_user_errors_are_one_line_with_exit_code_2(tiny_data_dir, tmp_path, compile_cache, case):  # noqa: F811
    workdir, extra, mode, holder = tmp_path / "run", [], "train", None
    expected = {
        "unknown_key": "unknown config key 'train.lrr' (--config.train.lrr=0.1); the nearest valid key is 'train.lr'",
        "bad_flag": "flag --mode=foo: value should be one of <train|eval|zeroshot>",
        "workdir_is_a_file": "is a file, not a folder",
        "eval_without_checkpoint": "no checkpoint in",
        "workdir_in_use": "is in use by process",
        "config_drift": "train.lr: 0.05 -> 0.001",
        "no_restorable_checkpoint": "no checkpoint can be restored",
    }[case]
    if case == "unknown_key":
        extra = ["--config.train.lrr=0.1"]
    elif case == "bad_flag":
        extra = ["--mode=foo"]
    elif case == "workdir_is_a_file":
        workdir.write_text("")
    elif case == "eval_without_checkpoint":
        workdir.mkdir()
        mode = "eval"
    elif case == "workdir_in_use":
        workdir.mkdir()
        holder = _holder(workdir)
        expected += f" {holder.pid}"
    elif case == "config_drift":
        _recorded_workdir(tiny_data_dir, workdir, lr=0.05)
    else:
        _damaged_checkpoints(workdir)
    try:
        res = subprocess.run(_cmd(tiny_data_dir, workdir, *extra, mode=mode), cwd=ROOT, env=_env(compile_cache),
                             timeout=300, capture_output=True, text=True)
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("medvlsm-train: error: ")]
    assert len(errors) == 1 and expected in errors[0], res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    if case == "no_restorable_checkpoint":
        assert "--fresh" in errors[0] and str(workdir / "checkpoints" / "latest" / "2") in errors[0]
    if case == "config_drift":
        assert json.loads((workdir / "config.json").read_text())["train"]["lr"] == 0.05
        assert not (workdir / "config_history.jsonl").exists()
    # the traceback on demand
    if case == "workdir_is_a_file":
        res = subprocess.run(_cmd(tiny_data_dir, workdir, mode=mode), cwd=ROOT, env=_env(MEDVLSM_VERBOSE="1"),
                             timeout=300, capture_output=True, text=True)
        assert res.returncode == 2 and "Traceback" in res.stderr
