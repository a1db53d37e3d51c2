"""Orbax checkpoints of a run: ``<workdir>/checkpoints/latest`` (the last ``keep`` ≥ 2 saves)
and ``<workdir>/checkpoints/best`` (best validation Dice, one kept).

A checkpoint holds the whole training state as a flat, ordered dict of arrays (the pytree
structure comes from the freshly built state, so restoring validates shapes and dtypes), the
grain data-iterator state and a JSON ``meta`` (epoch, step, early-stopping counters, history,
and a CRC-32 digest of the state arrays). Frozen parameters are not saved: they are rebuilt
from the config (seeded init or ``model.init`` folder).

Reliability:

* saves are synchronous and atomic (Orbax writes a temporary folder and renames it), so a
  process killed mid-save leaves the previous checkpoints intact;
* every save is verified: the state is read back from disk and its digest compared with the
  digest of the state in memory (Orbax 0.12 offers no checksum of its own);
* :meth:`Checkpoints.restore` tries the checkpoints newest first (``latest`` and ``best``
  together, ordered by step), verifies the digest, and on failure prints one line naming the
  checkpoint and the reason and falls back to the next one. Damaged checkpoints newer than the
  one restored are moved to ``checkpoints/damaged/`` (kept for inspection, never reused). When
  none can be restored it raises :class:`CheckpointError` naming them; it never silently starts
  over. Orbax's own error output (TensorStore specs, asyncio tracebacks) is kept from the user.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

ITEMS = ("state", "meta", "data")
DIGEST_KEY = "state_digest"
DAMAGED_DIR = "damaged"
MIN_KEEP = 2
#: The flag that starts a run over, named in the error when no checkpoint can be restored.
FRESH_HINT = "--fresh (python -m medvlsm_jax.main) or fresh=True (train_and_evaluate)"


class CheckpointError(RuntimeError):
    """No checkpoint of a workdir can be restored, or a save failed its verification."""


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_savable(tree: Any) -> dict[str, Any]:
    """Flat ``{'00000': array, ...}``; typed PRNG keys become their raw key data."""
    leaves = jax.tree.leaves(tree)
    return {f"{i:05d}": (jax.random.key_data(x) if _is_key(x) else x) for i, x in enumerate(leaves)}


def from_savable(flat: dict[str, Any], template: Any) -> Any:
    """Inverse of :func:`to_savable` given a template with the same structure."""
    leaves, treedef = jax.tree.flatten(template)
    if len(flat) != len(leaves):
        raise ValueError(f"checkpoint holds {len(flat)} arrays, the model state {len(leaves)}: "
                         "the config changed since the checkpoint was written")
    restored = []
    for i, ref in enumerate(leaves):
        x = flat[f"{i:05d}"]
        if _is_key(ref):
            x = jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref))
        restored.append(x)
    return jax.tree.unflatten(treedef, restored)


def digest(flat: dict[str, Any]) -> str:
    """CRC-32 of every array (dtype, shape and bytes, in key order) of a flat state."""
    crc = 0
    for key in sorted(flat):
        x = np.ascontiguousarray(np.asarray(flat[key]))
        crc = zlib.crc32(f"{key}:{x.dtype.str}:{x.shape};".encode(), crc)
        crc = zlib.crc32(x.view(np.uint8).reshape(-1) if x.size else b"", crc)
    return f"crc32:{crc:08x}"


def _abstract(template: Any, sharding: Any) -> dict[str, Any]:
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding if sharding is not None
                                    else getattr(v, "sharding", None))
            for k, v in to_savable(template).items()}


def reason(err: BaseException, limit: int = 400) -> str:
    """A one-line reason for ``err``: the root cause's first line (Orbax wraps TensorStore
    errors in messages that print whole specs), with the exception type when useful."""
    if isinstance(err, CheckpointError):  # ours: already one line naming the item
        return str(err)
    chain, seen = [], set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__
    for e in reversed(chain):  # root cause first
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if text and "See full TensorStore details" not in text:
            break
    else:
        e, text = err, (str(err).strip().splitlines() or [""])[0]
    if "structures do not match" in text or "checkpoint holds" in text:
        return "its arrays are not those of the model the config builds (the model, or what is frozen, changed)"
    if type(e).__name__ not in ("Exception", "ValueError", "CheckpointError") or not text:
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _orbax_noise(unraisable: Any) -> bool:
    """Whether an unraisable exception is the debris of a failed Orbax read: its other array
    reads, abandoned coroutines that Python reports one by one when they are collected
    ("Exception ignored in: <coroutine ...>", with whole TensorStore specs), or event loops
    closed under them."""
    code = getattr(unraisable.object, "cr_code", None) or getattr(unraisable.object, "__code__", None)
    filename = getattr(code, "co_filename", "") or ""
    message = str(unraisable.exc_value)
    return ("orbax" in filename or "tensorstore" in filename or "See full TensorStore details" in message
            or "Event loop is closed" in message)


def _install_unraisable_filter() -> None:
    if getattr(sys.unraisablehook, "_medvlsm_filter", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not _orbax_noise(unraisable):
            previous(unraisable)

    hook._medvlsm_filter = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keeps Orbax's and asyncio's output about a failed read away from the user: their
    loggers are silenced meanwhile, and the abandoned reads are collected under a filter of
    unraisable exceptions (installed once, it only drops Orbax's debris)."""
    _install_unraisable_filter()
    loggers = [logging.getLogger(n) for n in ("absl", "asyncio", "orbax")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        if failed:  # collect the abandoned reads while the loggers are still silent
            gc.collect()
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@dataclasses.dataclass(frozen=True)
class Restored:
    """A restored checkpoint: the state, its meta and data-iterator state, and where it was."""

    state: Any
    meta: dict
    data: dict
    kind: str  # "latest" | "best"
    step: int
    path: str

    def __iter__(self):  # (state, meta, data), as restore_latest returned before
        return iter((self.state, self.meta, self.data))

    def __getitem__(self, i):
        return (self.state, self.meta, self.data)[i]


class Checkpoints:
    """The ``latest`` (``keep`` kept) and ``best`` (one kept) managers of a workdir."""

    def __init__(self, workdir: str, keep: int = MIN_KEEP):
        self.root = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.keep = max(int(keep), MIN_KEEP)
        self._open()

    def _open(self) -> None:
        def manager(name: str, keep: int) -> ocp.CheckpointManager:
            options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                   enable_async_checkpointing=False)
            return ocp.CheckpointManager(os.path.join(self.root, name), options=options, item_names=ITEMS)

        with quiet():
            self.latest = manager("latest", self.keep)
            self.best = manager("best", 1)

    def _manager(self, kind: str) -> ocp.CheckpointManager:
        return self.latest if kind == "latest" else self.best

    def path(self, kind: str, step: int) -> str:
        return os.path.join(self.root, kind, str(step))

    # ----------------------------------------------------------------------- saving

    def _save(self, kind: str, step: int, state: Any, meta: dict, data: dict) -> None:
        mngr = self._manager(kind)
        flat = to_savable(state)
        meta = {**meta, DIGEST_KEY: digest(flat)}
        with quiet():  # e.g. Orbax's warning about the temporary folder of a save cut by a kill
            mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(flat), meta=ocp.args.JsonSave(meta),
                                                    data=ocp.args.JsonSave(data)), force=True)
            mngr.wait_until_finished()
        try:  # verify: read the state back from disk (to host memory) and compare digests
            self._read(kind, step, {k: np.empty(v.shape, v.dtype) for k, v in flat.items()})
        except Exception as err:  # noqa: BLE001
            self._set_aside(kind, step)
            raise CheckpointError(f"checkpoint {self.path(kind, step)} failed its verification after "
                                  f"saving ({reason(err)}); it was moved to {self.damaged_dir}. Check the "
                                  "disk (space, errors) and rerun to resume from the previous checkpoint") from err

    def save_latest(self, step: int, state: Any, meta: dict, data: dict) -> None:
        self._save("latest", step, state, meta, data)

    def save_best(self, step: int, state: Any, meta: dict, data: dict) -> None:
        self._save("best", step, state, meta, data)

    # ----------------------------------------------------------------------- restoring

    def _read(self, kind: str, step: int, abstract: dict[str, Any]) -> tuple[dict, dict, dict]:
        """(flat state, meta, data) of one checkpoint, read item by item (so a failure names
        the item) with the state digest verified; raises CheckpointError on any problem."""
        mngr = self._manager(kind)
        items = {"meta": ocp.args.JsonRestore(), "data": ocp.args.JsonRestore(),
                 "state": ocp.args.StandardRestore(abstract)}
        with quiet():
            try:
                out = dict(mngr.restore(step, args=ocp.args.Composite(**items)))
            except Exception as err:  # noqa: BLE001
                for item, args in items.items():  # which item fails, for the message
                    try:
                        mngr.restore(step, args=ocp.args.Composite(**{item: args}))
                    except Exception as item_err:  # noqa: BLE001
                        raise CheckpointError(f"{item}: {reason(item_err)}") from item_err
                raise CheckpointError(reason(err)) from err
        meta, data = out["meta"], out["data"]
        if not isinstance(meta, dict) or "step" not in meta or not isinstance(data, dict):
            raise CheckpointError("meta: not a checkpoint's bookkeeping")
        meta = dict(meta)
        expected = meta.pop(DIGEST_KEY, None)  # absent in checkpoints written before digests
        if expected is not None and digest(out["state"]) != expected:
            raise CheckpointError(f"state: digest {digest(out['state'])} differs from the recorded {expected} "
                                  "(the array files were altered)")
        return out["state"], meta, dict(data)

    def _load(self, kind: str, step: int, template: Any, sharding: Any) -> Restored:
        flat, meta, data = self._read(kind, step, _abstract(template, sharding))
        return Restored(from_savable(flat, template), meta, data, kind, step, self.path(kind, step))

    def candidates(self, prefer_best: bool = False) -> list[tuple[str, int]]:
        """(kind, step) of every checkpoint, in restore order: newest first (``latest`` before
        ``best`` at the same step), or the best first with ``prefer_best``."""
        latest = [("latest", s) for s in self.latest.all_steps()]
        best = [("best", s) for s in self.best.all_steps()]
        order = sorted(latest + best, key=lambda c: (-c[1], c[0] != "latest"))
        if prefer_best:
            order = sorted(best, key=lambda c: -c[1]) + sorted(latest, key=lambda c: -c[1])
        return order

    def restore(self, template: Any, sharding: Any = None, *, prefer_best: bool = False, set_aside: bool = True,
                warn: Callable[[str], None] | None = None) -> Restored | None:
        """The first restorable checkpoint (see :meth:`candidates`), or None when there is none.

        Each one that fails is reported on one line (``warn``, default ``log.warning``). With
        ``set_aside`` the failed ones are moved to ``checkpoints/damaged/`` once a checkpoint
        was restored, so later saves never collide with them. Raises :class:`CheckpointError`
        when checkpoints exist but none can be restored.
        """
        warn = warn or log.warning
        failed: list[tuple[str, int, str]] = []
        for kind, step in self.candidates(prefer_best):
            try:
                restored = self._load(kind, step, template, sharding)
            except Exception as err:  # noqa: BLE001
                why = reason(err)
                failed.append((kind, step, why))
                warn(f"checkpoint {self.path(kind, step)} cannot be restored ({why}); trying the next one")
                continue
            if set_aside and failed:
                for k, s, _ in failed:
                    self._set_aside(k, s)
            return restored
        if failed:
            names = "; ".join(f"{self.path(k, s)} ({why})" for k, s, why in failed)
            raise CheckpointError(f"no checkpoint can be restored: {names}. Nothing was changed; to start over "
                                  f"(the old checkpoints are kept under {os.path.join(os.path.dirname(self.root), 'previous')}) "
                                  f"rerun with {FRESH_HINT}")
        return None

    def check(self, kind: str, step: int, template: Any, sharding: Any = None) -> str | None:
        """None when checkpoint (kind, step) restores and verifies, else the one-line reason."""
        try:
            self._load(kind, step, template, sharding)
        except Exception as err:  # noqa: BLE001
            return reason(err)
        return None

    def restore_latest(self, template: Any, sharding: Any = None) -> Restored | None:
        """The newest restorable checkpoint (``latest`` or ``best``), or None."""
        return self.restore(template, sharding, set_aside=False)

    def restore_best(self, template: Any, sharding: Any = None) -> Restored | None:
        """The best checkpoint, or None when there is none; raises CheckpointError when it is
        damaged."""
        step = self.best.latest_step()
        if step is None:
            return None
        try:
            return self._load("best", step, template, sharding)
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(f"the best checkpoint {self.path('best', step)} cannot be restored "
                                  f"({reason(err)})") from err

    # ----------------------------------------------------------------------- damaged ones

    @property
    def damaged_dir(self) -> str:
        return os.path.join(self.root, DAMAGED_DIR)

    def _set_aside(self, kind: str, step: int) -> None:
        """Moves a damaged checkpoint to ``checkpoints/damaged/<kind>-<step>-<time>``."""
        src = self.path(kind, step)
        if jax.process_index() == 0 and os.path.exists(src):  # every process meets the same damage
            os.makedirs(self.damaged_dir, exist_ok=True)
            dst = os.path.join(self.damaged_dir, f"{kind}-{step}-{time.strftime('%Y%m%d-%H%M%S')}")
            while os.path.exists(dst):
                dst += "x"
            shutil.move(src, dst)
            log.warning("moved the damaged checkpoint %s to %s", src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils  # noqa: PLC0415

            multihost_utils.sync_global_devices(f"medvlsm_set_aside_{kind}_{step}")
        self.close()
        self._open()

    def set_aside(self, kind: str, step: int) -> None:
        self._set_aside(kind, step)

    def close(self) -> None:
        with quiet():
            self.latest.close()
            self.best.close()
