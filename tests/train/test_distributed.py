"""The launch interface: flags, ``JAX_*`` variables, SLURM / Open MPI, half-specified launches."""

import logging
import os
import subprocess
import sys

import pytest

from medvlsm_jax.train import distributed
from medvlsm_jax.train.distributed import Launch, LaunchError, resolve_launch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLURM = {"SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "node[01-02]", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
         "SLURM_LOCALID": "0"}


def test_single_process_launches():
    assert resolve_launch(environ={}) is None
    assert resolve_launch("h:1", 1, 0, environ={}) is None  # a group of one
    assert resolve_launch(environ={**SLURM, "SLURM_NTASKS": "1"}) is None  # srun -n 1
    assert resolve_launch(environ={"OMPI_COMM_WORLD_SIZE": "1"}) is None


def test_flags_then_environment():
    assert resolve_launch("host0:1234", 2, 1, environ={}) == Launch("host0:1234", 2, 1, "flags/env")
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:9", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert resolve_launch(environ=env) == Launch("10.0.0.1:9", 4, 3, "flags/env")
    assert resolve_launch(process_id=0, environ=env) == Launch("10.0.0.1:9", 4, 0, "flags/env")  # flag wins


def test_clusters_are_left_to_jax_detection():
    assert resolve_launch(environ=SLURM) == Launch(None, None, None, "slurm")
    assert resolve_launch(environ=SLURM).kwargs() == {}  # jax.distributed.initialize() with no arguments
    ompi = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1", "OMPI_MCA_orte_hnp_uri": "1.0;tcp://h:1"}
    assert resolve_launch(environ=ompi) == Launch(None, None, None, "ompi")
    # Open MPI 5 has no ORTE URI: the address comes from the user, rank and size from mpirun
    ompi5 = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}
    assert resolve_launch("h:5", environ=ompi5) == Launch("h:5", 2, 1, "ompi", (1,))
    assert resolve_launch("h:5", environ=ompi5).kwargs()["local_device_ids"] == (1,)
    with pytest.raises(LaunchError, match="--coordinator_address=HOST_OF_RANK_0:PORT"):
        resolve_launch(environ=ompi5)
    # a user-chosen address under SLURM: JAX fills in the rest
    assert resolve_launch("node01:4000", environ=SLURM) == Launch("node01:4000", None, None, "slurm")


@pytest.mark.parametrize("args,env,match", [
    (("h:1", None, None), {}, r"--coordinator_address=h:1 without --num_processes \(or JAX_NUM_PROCESSES\) "
                              r"and --process_id \(or JAX_PROCESS_ID\)"),
    ((None, None, None), {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"},
     r"without --process_id \(or JAX_PROCESS_ID\)"),
    ((None, 2, 0), {}, r"without --coordinator_address"),
    (("h:1", 2, 2), {}, r"--process_id=2 is out of range for 2 processes"),
    (("h:1", 0, 0), {}, r"--num_processes=0: must be at least 1"),
    (("h", 2, 0), {}, r"must be HOST:PORT"),
    ((None, None, None), {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
     r"JAX_NUM_PROCESSES='two' is not an integer"),
])
def test_incomplete_or_inconsistent_launches(args, env, match):
    with pytest.raises(LaunchError, match=match) as err:
        resolve_launch(*args, environ=env)
    assert "\n" not in str(err.value)


def test_main_reports_a_half_specified_launch_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_COORDINATOR_ADDRESS": "localhost:1234"}
    env.pop("JAX_NUM_PROCESSES", None)
    env.pop("JAX_PROCESS_ID", None)
    res = subprocess.run([sys.executable, "-m", "medvlsm_jax.main", "--config=configs/demo.py",
                          f"--workdir={tmp_path}"], cwd=ROOT, env=env, timeout=120, capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        "medvlsm-train: error: half-specified multi-process launch: JAX_COORDINATOR_ADDRESS=localhost:1234 without "
        "--num_processes (or JAX_NUM_PROCESSES) and --process_id (or JAX_PROCESS_ID); give all three, "
        "or none for one process")
    assert not list(tmp_path.iterdir())


def test_log_records_name_the_process(monkeypatch):
    monkeypatch.setattr(distributed.jax, "process_count", lambda: 2)
    monkeypatch.setattr(distributed.jax, "process_index", lambda: 1)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        distributed.name_process_in_logs()
        logging.getLogger("medvlsm_jax.test").warning("epoch %d", 3)
    finally:
        root.removeHandler(handler)
        from absl import logging as absl_logging

        for h in [*root.handlers, absl_logging.get_absl_handler()]:
            h.filters = [f for f in h.filters if not isinstance(f, distributed._ProcessPrefix)]
    assert records == ["[process 1/2] epoch 3"]
