"""Per-image metadata the paper's prompts use beyond the mask:

* BUSI: tumour class (benign / malignant / normal) from the file name (``102_malignant.png`` as
  in the medvlsm release, or the Kaggle originals' ``malignant (102).png``);
* CAMUS: sex, age and image quality from each patient's ``Info_2CH.cfg`` / ``Info_4CH.cfg``
  (``key: value`` lines), view and cardiac phase from the file name (``patient0001_2CH_ED``);
* CheXlocalize: view (frontal / lateral) from the file name, the CheXpert observations present
  from the labels CSV (``Path`` column plus one column per observation, ``1`` or ``1.0`` =
  present).
"""

from __future__ import annotations

import csv
import pathlib
import re

from .errors import PromptGenError
from .templates import CHEXPERT_OBSERVATIONS

BUSI_CLASSES = ("benign", "malignant", "normal")


def busi_class(path: pathlib.Path) -> str:
    """``benign``, ``malignant`` or ``normal`` from a BUSI file name."""
    stem = path.stem.lower()
    for cls in BUSI_CLASSES:
        if stem.endswith(f"_{cls}") or stem.startswith(f"{cls} ("):
            return cls
    raise PromptGenError(f"{path}: BUSI file names must carry the class as '<id>_<class>' or "
                         f"'<class> (<id>)' with class in {BUSI_CLASSES}")


_CAMUS_NAME = re.compile(r"(?P<patient>patient\d+)_(?P<view>[24]CH)_(?P<phase>ED|ES)")


def camus_name_parts(path: pathlib.Path) -> dict[str, str]:
    """``patient``, ``view`` (2CH/4CH) and ``phase`` (ED/ES) from a CAMUS file name."""
    m = _CAMUS_NAME.match(path.name)
    if not m:
        raise PromptGenError(f"{path}: CAMUS file names must look like "
                             "'patient0001_2CH_ED.png'")
    return m.groupdict()


def camus_info(root: pathlib.Path, patient: str, view: str) -> dict[str, str]:
    """Sex, Age and ImageQuality of ``<root>/<patient>/Info_<view>.cfg``."""
    path = pathlib.Path(root) / patient / f"Info_{view}.cfg"
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise PromptGenError(f"{path}: cannot read the CAMUS patient info file ({e})") from e
    info = dict(tuple(part.strip() for part in line.split(":", 1))
                for line in lines if ":" in line)
    for key in ("Sex", "Age", "ImageQuality"):
        if not info.get(key):
            raise PromptGenError(f"{path}: missing '{key}' entry")
    if info["Sex"] not in ("M", "F"):
        raise PromptGenError(f"{path}: Sex must be M or F, got {info['Sex']!r}")
    if not info["Age"].isdigit():
        raise PromptGenError(f"{path}: Age must be a whole number, got {info['Age']!r}")
    return info


def chex_view(path: pathlib.Path) -> str:
    """``frontal`` or ``lateral`` from a CheXlocalize file name (``..._view1_frontal.jpg``)."""
    view = path.stem.rsplit("_", 1)[-1].lower()
    if view not in ("frontal", "lateral"):
        raise PromptGenError(f"{path}: CheXlocalize image names must end in _frontal or "
                             "_lateral")
    return view


def chexpert_image_name(csv_path: str) -> str:
    """``CheXpert-v1.0/valid/patient1/study1/view1_frontal.jpg`` -> the flattened file name
    ``patient1_study1_view1_frontal.jpg`` used by CheXlocalize and the medvlsm release."""
    return "_".join(pathlib.PurePosixPath(csv_path).parts[-3:])


def read_chexpert_labels(path: pathlib.Path) -> dict[str, tuple[str, ...]]:
    """Image name -> observations marked present (value 1), in CheXpert column order."""
    path = pathlib.Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise PromptGenError(f"{path}: cannot read the CheXpert labels CSV ({e})") from e
    if not rows or "Path" not in rows[0]:
        raise PromptGenError(f"{path}: expected a CSV with a 'Path' column and one column per "
                             "CheXpert observation")
    missing = [o for o in CHEXPERT_OBSERVATIONS if o not in rows[0]]
    if missing:
        raise PromptGenError(f"{path}: missing observation columns {missing}")
    out = {}
    for row in rows:
        present = tuple(o for o in CHEXPERT_OBSERVATIONS
                        if row[o].strip() in ("1", "1.0"))
        out[chexpert_image_name(row["Path"])] = present
    return out
