"""Metadata of the medvlsm datasets: splits, prompt keys, pooled sets, and where to get them.

Layout every builder reads (the layout of the medvlsm release)::

    <manual_dir>/<dataset>/images/...          (CAMUS: images/train, images/test)
    <manual_dir>/<dataset>/masks/...           (CAMUS: masks/train, masks/test)
    <manual_dir>/<dataset>/anns/{train,val,test}.json

Split semantics follow the original configs (``configs/datamodule/img_txt_mask/*.yaml``):

* trainable sets have train/val/test splits, one annotation file each;
* CAMUS val images live in ``images/train`` and test images in ``images/test``; the released
  annotations lack ``train.json``, so CAMUS's train split is optional;
* the test-only sets (ETIS, ColonDB, CVC-300) have only a ``test`` split, made of
  ``train.json`` followed by ``test.json`` (the original evaluates on both files; their
  ``val.json`` is empty).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

from medvlsm_jax.data.errors import DataError

DATA_DIR_ENV = "MEDVLSM_DATA_DIR"
DEFAULT_DATA_DIR = "~/medvlsm_data/tfds"


@dataclasses.dataclass(frozen=True)
class SplitSource:
    """One annotation file of a split and the folders its file names are relative to."""

    ann_file: str
    images_dir: str = "images"
    masks_dir: str = "masks"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Static description of one dataset."""

    name: str
    title: str
    num_prompts: int
    splits: dict[str, tuple[SplitSource, ...]]
    source: str
    access: str
    test_only: bool = False
    optional_splits: tuple[str, ...] = ()
    synthetic: bool = False

    @property
    def prompt_keys(self) -> tuple[str, ...]:
        return tuple(f"p{i}" for i in range(self.num_prompts))

    @property
    def dataset_id(self) -> int:
        return DATASETS.index(self.name)


_STANDARD = {s: (SplitSource(f"{s}.json"),) for s in ("train", "val", "test")}
_TEST_ONLY = {"test": (SplitSource("train.json"), SplitSource("test.json"))}
_CAMUS = {
    "train": (SplitSource("train.json", "images/train", "masks/train"),),
    "val": (SplitSource("val.json", "images/train", "masks/train"),),
    "test": (SplitSource("test.json", "images/test", "masks/test"),),
}
_SYNTHETIC_ACCESS = "Generated locally by medvlsm_jax.promptgen.synthetic; no restrictions."

_SPECS = (
    DatasetSpec("kvasir_polyp", "Kvasir-SEG", 10, _STANDARD,
                "https://datasets.simula.no/kvasir-seg/ (Jha et al., MMM 2020)",
                "Free for research and education; cite the paper; commercial use needs "
                "permission from Simula."),
    DatasetSpec("clinicdb_polyp", "CVC-ClinicDB", 10, _STANDARD,
                "https://polyp.grand-challenge.org/CVCClinicDB/ (Bernal et al., CMIG 2015)",
                "Research use only; cite the paper."),
    DatasetSpec("bkai_polyp", "BKAI-IGH NeoPolyp-Small", 10, _STANDARD,
                "https://www.kaggle.com/competitions/bkai-igh-neopolyp (Lan et al., 2021)",
                "Kaggle account and acceptance of the competition rules; research use."),
    DatasetSpec("etis_polyp", "ETIS-LaribPolypDB", 10, _TEST_ONLY,
                "https://polyp.grand-challenge.org/ETISLarib/ (Silva et al., IJCARS 2014)",
                "Research use only; cite the paper.", test_only=True),
    DatasetSpec("colondb_polyp", "CVC-ColonDB", 10, _TEST_ONLY,
                "http://vi.cvc.uab.es/colon-qa/cvccolondb/ (Bernal et al., PR 2012)",
                "Research use only, on request to the authors; cite the paper.", test_only=True),
    DatasetSpec("cvc300_polyp", "CVC-300 (EndoScene test)", 10, _TEST_ONLY,
                "PraNet test-set collection, https://github.com/DengPingFan/PraNet "
                "(Vazquez et al., JHE 2017)",
                "Research use only; cite the paper. NOTE: the released cvc300 test.json is "
                "byte-identical to ColonDB's; the builder warns about it.", test_only=True),
    DatasetSpec("isic", "ISIC 2016 (Task 1, lesion segmentation)", 10, _STANDARD,
                "https://challenge.isic-archive.com/data/#2016 (Gutman et al., 2016)",
                "ISIC Archive terms (per-image Creative Commons licences); attribution "
                "required; non-commercial."),
    DatasetSpec("dfu", "DFU 2022 (diabetic foot ulcer segmentation)", 10, _STANDARD,
                "https://dfu-challenge.github.io/ (Kendrick et al., 2022)",
                "Signed licence agreement with Manchester Metropolitan University; "
                "non-commercial research only."),
    DatasetSpec("camus", "CAMUS (echocardiography)", 8, _CAMUS,
                "https://www.creatis.insa-lyon.fr/Challenge/camus/ (Leclerc et al., TMI 2019)",
                "Registration on the challenge site; research use; cite the paper.",
                optional_splits=("train",)),
    DatasetSpec("busi", "BUSI (breast ultrasound)", 7, _STANDARD,
                "https://scholar.cu.edu.eg/?q=afahmy/pages/dataset "
                "(Al-Dhabyani et al., Data in Brief 2020)",
                "Public download; cite the paper. Normal cases have empty masks."),
    DatasetSpec("chexlocalize", "CheXlocalize (chest X-ray)", 7, _STANDARD,
                "https://stanfordaimi.azurewebsites.net/ (Saporta et al., Nat. Mach. Intell. 2022)",
                "Stanford AIMI research use agreement (registration required)."),
    DatasetSpec("synthetic_polyp", "Synthetic polyp-like images", 10, _STANDARD,
                "medvlsm_jax.promptgen.synthetic", _SYNTHETIC_ACCESS, synthetic=True),
    DatasetSpec("synthetic_us", "Synthetic ultrasound-like images (BUSI prompt schema)", 7,
                _STANDARD,
                "medvlsm_jax.promptgen.synthetic", _SYNTHETIC_ACCESS, synthetic=True),
)

#: Every dataset name; a name's position is its ``dataset_id`` in batches.
DATASETS: tuple[str, ...] = tuple(s.name for s in _SPECS)
SPECS: dict[str, DatasetSpec] = {s.name: s for s in _SPECS}
#: The 11 datasets of the paper (synthetic sets excluded).
PAPER_DATASETS: tuple[str, ...] = tuple(s.name for s in _SPECS if not s.synthetic)
POOLED: dict[str, tuple[str, ...]] = {
    "pooled_polyp": ("kvasir_polyp", "clinicdb_polyp", "bkai_polyp"),
    "pooled_all": ("kvasir_polyp", "clinicdb_polyp", "bkai_polyp", "isic", "dfu", "camus",
                   "busi", "chexlocalize"),
}


def get_spec(name: str) -> DatasetSpec:
    """The spec of a single dataset; unknown names raise a DataError listing the known ones."""
    if name not in SPECS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return SPECS[name]


def members(name: str) -> tuple[str, ...]:
    """The datasets behind ``name``: the pooled set's members, or ``(name,)``."""
    if name in POOLED:
        return POOLED[name]
    return (get_spec(name).name,)


def default_data_dir() -> pathlib.Path:
    """``$MEDVLSM_DATA_DIR`` or ``~/medvlsm_data/tfds``."""
    return pathlib.Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)).expanduser()


def manual_download_instructions(name: str) -> str:
    """The text of a builder's ``MANUAL_DOWNLOAD_INSTRUCTIONS``."""
    spec = get_spec(name)
    if spec.synthetic:
        return f"{spec.title}: generated automatically into the manual dir when absent."
    files = sorted({src.ann_file for sources in spec.splits.values() for src in sources})
    folders = sorted({d for sources in spec.splits.values() for src in sources
                      for d in (src.images_dir, src.masks_dir)})
    return (
        f"{spec.title}\nSource: {spec.source}\nAccess conditions: {spec.access}\n"
        f"Prompt annotations: anns/ of the medvlsm release (https://github.com/naamiinepal/medvlsm).\n"
        f"Place the data in the medvlsm layout under the manual dir:\n"
        f"  <manual_dir>/{name}/{{{', '.join(folders)}}}/...\n"
        f"  <manual_dir>/{name}/anns/{{{', '.join(files)}}}\n"
        f"(<manual_dir> may also point at <root>/{name} itself.) Then run\n"
        f"  medvlsm-data build {name} --manual_dir <manual_dir> --data_dir <data_dir>"
    )
