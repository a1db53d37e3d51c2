"""Metric logging of a run: ``metrics.jsonl`` always, TensorBoard event files when
``tensorboardX`` is installed.

A resumed run continues from its checkpoint's step ``S``, so whatever an interrupted attempt
logged after ``S`` is logged again. To keep one clean record:

* ``metrics.jsonl`` is rewritten (atomically) without the rows of steps after ``S`` before the
  first new row, so it holds each row once;
* TensorBoard writes one events file per attempt (event files cannot be cut), named
  ``events.out.tfevents.<time>.<host>.from-step-<S>``; a resumed attempt's file starts with
  TensorBoard's purge marker at ``S + 1``, so TensorBoard hides the interrupted attempt's
  events after ``S`` and shows one stream.
"""

from __future__ import annotations

import glob
import json
import logging
import os

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def truncate_metrics(path: str, step: int) -> int:
    """Drops the rows of ``path`` whose step is after ``step`` (and any line cut by a kill);
    returns how many were dropped."""
    if not os.path.isfile(path):
        return 0
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
                keep = int(row["step"]) <= step
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                keep = False
            if keep:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, path)
    return dropped


class MetricWriter:
    """``metrics.jsonl`` always; TensorBoard event files when ``tensorboardX`` is installed.

    ``resume_step``: the step the run continues from (0 for a new run); rows logged after it by
    an earlier attempt are dropped (see the module docstring).
    """

    def __init__(self, workdir: str, enabled: bool, resume_step: int = 0):
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        path = os.path.join(workdir, METRICS_FILE)
        dropped = truncate_metrics(path, resume_step)
        if dropped:
            log.info("%s: dropped %d rows logged after step %d by an interrupted attempt", path, dropped,
                     resume_step)
        self._jsonl = open(path, "a")
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            log.info("tensorboardX is not installed: metrics go to metrics.jsonl only")
        else:
            tb_dir = os.path.join(workdir, "tensorboard")
            earlier = glob.glob(os.path.join(tb_dir, "events.out.tfevents.*"))
            self._tb = SummaryWriter(tb_dir, purge_step=resume_step + 1 if earlier else None,
                                     filename_suffix=f".from-step-{resume_step}")

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            if self._tb is not None:
                self._tb.close()
