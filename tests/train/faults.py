"""Fault injection on checkpoint folders (shared by the recovery tests and the kill test)."""

from __future__ import annotations

import os
import pathlib
import shutil


def _data_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
    files = sorted([*(step_dir / "state").glob("d/*"), *(step_dir / "state").glob("ocdbt.process_*/d/*")])
    assert files, f"no OCDBT data files under {step_dir}"
    return files


def cut_in_half(step_dir: pathlib.Path) -> None:
    """Every array data file cut to half its size (a disk that filled up, a partial copy)."""
    for f in _data_files(step_dir):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def random_bytes(step_dir: pathlib.Path) -> None:
    """Every array data file overwritten with random bytes of the same size."""
    for f in _data_files(step_dir):
        f.write_bytes(os.urandom(f.stat().st_size))


def zero_length(step_dir: pathlib.Path) -> None:
    """Every file of the checkpoint truncated to 0 bytes (a crash before the data reached disk)."""
    for f in step_dir.rglob("*"):
        if f.is_file():
            f.write_bytes(b"")


def empty_meta(step_dir: pathlib.Path) -> None:
    """The JSON bookkeeping truncated to 0 bytes."""
    (step_dir / "meta" / "metadata").write_bytes(b"")


def deleted(step_dir: pathlib.Path) -> None:
    """The checkpoint folder removed."""
    shutil.rmtree(step_dir)


FAULTS = {"cut_in_half": cut_in_half, "random_bytes": random_bytes, "zero_length": zero_length,
          "empty_meta": empty_meta, "deleted": deleted}
