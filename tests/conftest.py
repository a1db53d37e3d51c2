"""Shared fixtures. Reference material lives outside the project in ``../shared`` (or wherever
``MEDVLSM_SHARED_DIR`` points); tests that need it skip with a reason naming the variable."""

from __future__ import annotations

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _shared_dir() -> pathlib.Path | None:
    env = os.environ.get("MEDVLSM_SHARED_DIR")
    cands = [pathlib.Path(env)] if env else [REPO.parent / "shared", REPO / "shared"]
    for c in cands:
        if (c / "medvlsm_anns").is_dir() or (c / "reference").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    d = _shared_dir()
    if d is None:
        pytest.skip("reference material not found: set MEDVLSM_SHARED_DIR to the shared/ folder "
                    "(medvlsm_anns/, reference/)")
    return d


@pytest.fixture(scope="session")
def anns_dir(shared_dir) -> pathlib.Path:
    d = shared_dir / "medvlsm_anns"
    if not d.is_dir():
        pytest.skip(f"{d} is missing (MEDVLSM_SHARED_DIR must hold medvlsm_anns/)")
    return d


@pytest.fixture(scope="session")
def reference_dir(shared_dir) -> pathlib.Path:
    d = shared_dir / "reference"
    if not d.is_dir():
        pytest.skip(f"{d} is missing (MEDVLSM_SHARED_DIR must hold reference/)")
    return d
