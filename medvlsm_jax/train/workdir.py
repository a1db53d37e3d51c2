"""What a workdir holds besides checkpoints: its lock, its config record, and earlier attempts.

* **Lock** (:class:`WorkdirLock`, ``<workdir>/.lock``): one run per workdir. The file holds the
  holder's pid, host and start time; the lock itself is an ``flock`` on it, which the kernel
  releases when the holder dies, so a second run fails at once naming the holder, and a lock
  left by a killed run (dead pid) is taken over with a warning.
* **Config record** (:func:`check_config`, :func:`record_config`): ``config.json`` is the config
  the workdir was started with, written once; every later change is appended to
  ``config_history.jsonl`` (one JSON line: time, mode, the changed keys old/new, whether it was
  forced, the whole config), never by rewriting. A rerun whose config differs from the last
  recorded one in anything but :data:`SAFE_KEYS` stops before touching anything, listing the
  differing keys; ``allow_change`` (``--allow_config_change``) accepts and records the change.
* **Starting over** (:func:`archive_previous`, ``--fresh``): the outputs of earlier attempts
  (checkpoints, export, eval, metrics, TensorBoard files) move to ``<workdir>/previous/<time>/``;
  nothing is deleted.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from typing import Any

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"
PREVIOUS_DIR = "previous"
#: What ``--fresh`` moves to ``previous/<time>/``.
OUTPUTS = ("checkpoints", "export", "eval", "zeroshot", "metrics.jsonl", "tensorboard")

#: Config keys that may change between runs of one workdir: when to stop (more epochs or steps,
#: other early-stopping patience), how often to log and save, progress display, speed-only
#: settings (feature cache, loader workers, where the built data lives) and test-split-only
#: evaluation settings. Everything else (model, data, prompt, optimiser, loss, seed, batch
#: size, validation threshold) changes what the checkpoints mean.
SAFE_KEYS = frozenset({
    "train.num_epochs", "train.min_epochs", "train.max_steps", "train.early_stopping_patience",
    "train.log_every_steps", "train.checkpoint_every_steps", "train.keep_checkpoints", "train.progress",
    "train.cache", "train.cache_max_gb",
    "data.worker_count", "data.data_dir",
    "eval.batch_size", "eval.resize", "eval.datasets", "eval.write_masks", "eval.hd95", "eval.overlays",
    "eval.after_training",
})
#: In ``--mode=eval`` only the keys that decide the model and its inputs must match.
EVAL_MODEL_PREFIXES = ("model.", "data.image_size", "train.mixed_precision")


class WorkdirError(RuntimeError):
    """The workdir cannot be used: a file, not writable, locked by another run, or its recorded
    config differs."""


class ConfigDriftError(WorkdirError):
    """The config differs from the one the workdir's checkpoints were trained with."""


# --------------------------------------------------------------------------- the folder


def prepare(workdir: str, *, create: bool = True) -> str:
    """The absolute workdir, created when ``create``; a clear WorkdirError when it is a file or
    cannot be written."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir {workdir} is a file, not a folder; give a folder path")
    if create:
        try:
            os.makedirs(workdir, exist_ok=True)
        except OSError as err:
            raise WorkdirError(f"--workdir {workdir} cannot be created ({err.strerror}); give a writable "
                               "folder") from err
    elif not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir {workdir} does not exist; check the path, or train first (--mode=train)")
    return workdir


# --------------------------------------------------------------------------- the lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        holder = json.loads(raw.decode()) if raw.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"pid": "?", "host": "?", "started": "?", "unreadable": True}
    return holder if isinstance(holder, dict) else None


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an unknown process"
    return f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (started {holder.get('started', '?')})"


class WorkdirLock:
    """``<workdir>/.lock``: an exclusive ``flock`` plus the holder's pid, host and start time.

    Use as a context manager or :meth:`acquire` / :meth:`release`. A lock held by a live run
    raises WorkdirError naming it; a lock whose holder is gone (dead pid on this host, or any
    released flock) is taken over with a warning.
    """

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        self.path = os.path.join(self.workdir, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> WorkdirLock:
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise WorkdirError(f"--workdir {self.workdir} is not writable (cannot create {self.path}: "
                                   f"{err.strerror}); give a writable folder") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _read_holder(fd)
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                    raise WorkdirError(f"--workdir {self.workdir} is in use by {_describe(holder)}; wait for it "
                                       f"to finish or use another --workdir (lock file {self.path})") from None
                raise WorkdirError(f"cannot lock {self.path} ({err.strerror})") from err
            try:  # the file may have been removed and recreated by its holder meanwhile
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            holder = _read_holder(fd)
            if holder and holder.get("pid") != os.getpid():
                here = holder.get("host") == socket.gethostname()
                pid = holder.get("pid")
                if here and isinstance(pid, int) and _pid_alive(pid) and not _flock_works(self.workdir):
                    os.close(fd)
                    raise WorkdirError(f"--workdir {self.workdir} is in use by {_describe(holder)}; wait for it "
                                       f"to finish or use another --workdir (lock file {self.path})")
                log.warning("taking over the stale lock %s of %s, which is no longer running", self.path,
                            _describe(holder))
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": datetime.datetime.now().isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(info).encode())
            os.fsync(fd)
            self._fd = fd
            return self
        raise WorkdirError(f"cannot take the lock {self.path}: it keeps changing; is another run starting?")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)  # releases the flock
        self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc: Any) -> None:
        self.release()


_FLOCK_CHECKED: dict[str, bool] = {}


def _flock_works(folder: str) -> bool:
    """Whether flock excludes a second open file description on this file system (it does on
    local file systems; some network mounts accept every flock)."""
    if folder not in _FLOCK_CHECKED:
        probe = os.path.join(folder, f".lock-probe-{os.getpid()}")
        a = os.open(probe, os.O_RDWR | os.O_CREAT, 0o644)
        b = os.open(probe, os.O_RDWR)
        try:
            fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
                works = False
            except OSError:
                works = True
        except OSError:
            works = False
        finally:
            os.close(a)
            os.close(b)
            os.unlink(probe)
        _FLOCK_CHECKED[folder] = works
    return _FLOCK_CHECKED[folder]


# --------------------------------------------------------------------------- the config record


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{'train.lr': 0.001, ...}`` of a nested dict (a config's JSON form)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_json(config: Any) -> dict[str, Any]:
    """A config as the JSON the workdir records (tuples become lists, placeholders null)."""
    return json.loads(config.to_json_best_effort())


def recorded_config(workdir: str) -> dict[str, Any] | None:
    """The last recorded config of ``workdir`` (the history's last entry, else config.json), or
    None for a new workdir."""
    history = os.path.join(workdir, HISTORY_FILE)
    last = None
    if os.path.isfile(history):
        with open(history) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill; the earlier ones stand
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("config"), dict):
                    last = entry["config"]
    if last is not None:
        return last
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise WorkdirError(f"{path} cannot be read ({err}); move it away to record the config anew") from err


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (old, new)}`` of every flattened key whose value differs (absent = ``'<absent>'``)."""
    a, b = flatten(old), flatten(new)
    missing = "<absent>"
    return {k: (a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b)) if a.get(k, missing) != b.get(k, missing)}


def _unsafe(diff: dict[str, tuple[Any, Any]], mode: str) -> dict[str, tuple[Any, Any]]:
    if mode == "eval":
        return {k: v for k, v in diff.items() if k.startswith(EVAL_MODEL_PREFIXES)}
    return {k: v for k, v in diff.items() if k not in SAFE_KEYS}


def format_diff(diff: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k}: {json.dumps(a)} -> {json.dumps(b)}" for k, (a, b) in diff.items())


def check_config(workdir: str, config: Any, *, mode: str = "train", allow_change: bool = False,
                 has_checkpoints: bool = True) -> dict[str, tuple[Any, Any]]:
    """The differences from the recorded config; raises ConfigDriftError when one is beyond
    :data:`SAFE_KEYS` (in ``eval`` mode: beyond the model-defining keys), the workdir holds
    checkpoints and ``allow_change`` is off. Reads only."""
    old = recorded_config(workdir)
    if old is None:
        return {}
    diff = config_diff(old, config_json(config))
    unsafe = _unsafe(diff, mode)
    if unsafe and has_checkpoints and not allow_change:
        head = f"the config differs from the one recorded in {workdir} ({format_diff(unsafe)}); nothing was changed."
        if mode == "train":
            raise ConfigDriftError(f"{head} Rerun with the recorded values, use a new --workdir, or pass "
                                   "--allow_config_change to continue this run with the new config (recorded in "
                                   "config_history.jsonl), or --fresh to start over")
        raise ConfigDriftError(f"{head} The checkpoints hold that model: evaluate with the recorded values "
                               f"({os.path.join(workdir, CONFIG_FILE)}, later changes in {HISTORY_FILE})")
    return diff


def record_config(workdir: str, config: Any, diff: dict[str, tuple[Any, Any]], *, mode: str = "train",
                  forced: bool = False, fresh: bool = False) -> None:
    """Writes ``config.json`` for a new workdir; appends a history entry for a changed config."""
    path = os.path.join(workdir, CONFIG_FILE)
    cfg = config_json(config)
    if not os.path.exists(path):
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(cfg, f, indent=2)
        os.replace(tmp, path)
        return
    if not diff and not fresh:
        return
    entry = {"time": datetime.datetime.now().isoformat(timespec="seconds"), "mode": mode,
             "changed": {k: [a, b] for k, (a, b) in diff.items()}, "forced": bool(forced and _unsafe(diff, mode)),
             "fresh": fresh, "config": cfg}
    with open(os.path.join(workdir, HISTORY_FILE), "a") as f:
        f.write(json.dumps(entry) + "\n")
    if entry["forced"]:
        log.warning("config change accepted (%s); recorded in %s", format_diff(_unsafe(diff, mode)),
                    os.path.join(workdir, HISTORY_FILE))


# --------------------------------------------------------------------------- starting over


def archive_previous(workdir: str) -> str | None:
    """Moves the outputs of earlier attempts to ``<workdir>/previous/<time>/``; returns that
    folder (None when there was nothing to move)."""
    present = [n for n in OUTPUTS if os.path.exists(os.path.join(workdir, n))]
    if not present:
        return None
    dst = os.path.join(workdir, PREVIOUS_DIR, time.strftime("%Y%m%d-%H%M%S"))
    while os.path.exists(dst):
        dst += "x"
    os.makedirs(dst)
    for name in present:
        shutil.move(os.path.join(workdir, name), os.path.join(dst, name))
    log.warning("starting over: the previous %s moved to %s", ", ".join(present), dst)
    return dst


def has_checkpoints(workdir: str) -> bool:
    """Whether ``<workdir>/checkpoints`` holds any step folder."""
    root = os.path.join(workdir, "checkpoints")
    for kind in ("latest", "best"):
        folder = os.path.join(root, kind)
        if os.path.isdir(folder) and any(n.isdigit() for n in os.listdir(folder)):
            return True
    return False
