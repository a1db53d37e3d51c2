"""The dataset catalogue: every dataset described once.

One :class:`DatasetSpec` per dataset holds what the serving side (``data.registry``, the
pipeline, the CLI), the TFDS builders (``data.builders``, one class generated per entry) and
prompt generation (``promptgen.datasets``) need: title, source and access conditions, the
files' layout and splits, the prompt keys and prompt family, the split rule used when
generating annotations, the synthetic flag and the pooled sets the dataset belongs to. Nothing
else lists datasets; a new dataset is one entry here (plus its prompt family's templates in
``promptgen/templates.py`` when it brings a new family).

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

The generation split rule (:class:`SplitRule`) reproduces the sizes of the released files
(train/val/test): Kvasir 800/100/100, BKAI 800/100/100, ClinicDB 490/61/61, DFU 1600/200/200,
BUSI 624/78/78, CheXlocalize 1279/446/452 images by patient (20 %/20 % of patients), CAMUS
-/600/600 (50 of 450 patients each), ISIC-2016 810/90/379 (official train/test; pass the split
file for the exact one), CVC-ColonDB 20/0/360, ETIS 20/0/176, CVC-300 0/0/60.

This module imports nothing heavy (no TFDS, no numpy), so anything may read it.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SplitSource:
    """One annotation file of a split and the folders its file names are relative to."""

    ann_file: str
    images_dir: str = "images"
    masks_dir: str = "masks"


@dataclasses.dataclass(frozen=True)
class SplitRule:
    """Seeded split used when generating annotations: fractions of the groups going to val and
    test (train takes the rest; counts are rounded), grouping by ``image``, ``patient``
    (file-name prefix before the first ``_``) or ``class`` (BUSI: split each class separately,
    as the original script did)."""

    val: float
    test: float
    group: str = "image"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything known about one dataset (see the module docstring)."""

    name: str
    title: str
    #: Prompts ``p0..p{num_prompts-1}`` in every annotation record.
    num_prompts: int
    #: Name of the :class:`medvlsm_jax.promptgen.templates.Family` whose templates word them.
    prompt_family: str
    #: Split name -> annotation files (read in order) and their image/mask folders.
    splits: dict[str, tuple[SplitSource, ...]]
    source: str
    access: str
    #: How ``medvlsm-prompts`` splits freshly generated annotations.
    split_rule: SplitRule = SplitRule(0.1, 0.1)
    test_only: bool = False
    optional_splits: tuple[str, ...] = ()
    synthetic: bool = False
    #: Images without any mask are skipped when generating prompts (CheXlocalize: one mask
    #: per pathology present).
    masks_optional: bool = False
    #: Pooled sets (``pooled_polyp``, ``pooled_all``) this dataset is a member of.
    pooled: tuple[str, ...] = ()
    #: The paper's appendix that uses it, for sets outside the 11-dataset benchmark ("F.2").
    appendix: str = ""
    #: How to turn the download into the medvlsm layout, when it is not the medvlsm release.
    preparation: str = ""

    @property
    def prompt_keys(self) -> tuple[str, ...]:
        return tuple(f"p{i}" for i in range(self.num_prompts))

    @property
    def dataset_id(self) -> int:
        return DATASETS.index(self.name)

    @property
    def class_name(self) -> str:
        """Name of the dataset's generated TFDS builder class (``kvasir_polyp`` -> ``KvasirPolyp``)."""
        return "".join(part.capitalize() for part in self.name.split("_"))


_STANDARD = {s: (SplitSource(f"{s}.json"),) for s in ("train", "val", "test")}
_TEST_ONLY = {"test": (SplitSource("train.json"), SplitSource("test.json"))}
_CAMUS = {
    "train": (SplitSource("train.json", "images/train", "masks/train"),),
    "val": (SplitSource("val.json", "images/train", "masks/train"),),
    "test": (SplitSource("test.json", "images/test", "masks/test"),),
}
_SYNTHETIC_ACCESS = "Generated locally by medvlsm_jax.promptgen.synthetic; no restrictions."
_POLYP_POOLS = ("pooled_polyp", "pooled_all")
_ALL = ("pooled_all",)

#: The catalogue. A dataset's position is its ``dataset_id`` in batches: append, never reorder.
CATALOGUE: tuple[DatasetSpec, ...] = (
    DatasetSpec("kvasir_polyp", "Kvasir-SEG", 10, "polyp", _STANDARD,
                "https://datasets.simula.no/kvasir-seg/ (Jha et al., MMM 2020)",
                "Free for research and education; cite the paper; commercial use needs "
                "permission from Simula.", pooled=_POLYP_POOLS),
    DatasetSpec("clinicdb_polyp", "CVC-ClinicDB", 10, "polyp", _STANDARD,
                "https://polyp.grand-challenge.org/CVCClinicDB/ (Bernal et al., CMIG 2015)",
                "Research use only; cite the paper.", pooled=_POLYP_POOLS),
    DatasetSpec("bkai_polyp", "BKAI-IGH NeoPolyp-Small", 10, "polyp", _STANDARD,
                "https://www.kaggle.com/competitions/bkai-igh-neopolyp (Lan et al., 2021)",
                "Kaggle account and acceptance of the competition rules; research use.",
                pooled=_POLYP_POOLS),
    DatasetSpec("etis_polyp", "ETIS-LaribPolypDB", 10, "polyp", _TEST_ONLY,
                "https://polyp.grand-challenge.org/ETISLarib/ (Silva et al., IJCARS 2014)",
                "Research use only; cite the paper.", split_rule=SplitRule(0.0, 176 / 196),
                test_only=True),
    DatasetSpec("colondb_polyp", "CVC-ColonDB", 10, "polyp", _TEST_ONLY,
                "http://vi.cvc.uab.es/colon-qa/cvccolondb/ (Bernal et al., PR 2012)",
                "Research use only, on request to the authors; cite the paper.",
                split_rule=SplitRule(0.0, 360 / 380), test_only=True),
    DatasetSpec("cvc300_polyp", "CVC-300 (EndoScene test)", 10, "polyp", _TEST_ONLY,
                "PraNet test-set collection, https://github.com/DengPingFan/PraNet "
                "(Vazquez et al., JHE 2017)",
                "Research use only; cite the paper. NOTE: the released cvc300 test.json is "
                "byte-identical to ColonDB's; the builder warns about it.",
                split_rule=SplitRule(0.0, 1.0), test_only=True),
    DatasetSpec("isic", "ISIC 2016 (Task 1, lesion segmentation)", 10, "isic", _STANDARD,
                "https://challenge.isic-archive.com/data/#2016 (Gutman et al., 2016)",
                "ISIC Archive terms (per-image Creative Commons licences); attribution "
                "required; non-commercial.", split_rule=SplitRule(90 / 1279, 379 / 1279),
                pooled=_ALL),
    DatasetSpec("dfu", "DFU 2022 (diabetic foot ulcer segmentation)", 10, "dfu", _STANDARD,
                "https://dfu-challenge.github.io/ (Kendrick et al., 2022)",
                "Signed licence agreement with Manchester Metropolitan University; "
                "non-commercial research only.", pooled=_ALL),
    DatasetSpec("camus", "CAMUS (echocardiography)", 8, "camus", _CAMUS,
                "https://www.creatis.insa-lyon.fr/Challenge/camus/ (Leclerc et al., TMI 2019)",
                "Registration on the challenge site; research use; cite the paper.",
                split_rule=SplitRule(1 / 9, 1 / 9, "patient"), optional_splits=("train",),
                pooled=_ALL),
    DatasetSpec("busi", "BUSI (breast ultrasound)", 7, "busi", _STANDARD,
                "https://scholar.cu.edu.eg/?q=afahmy/pages/dataset "
                "(Al-Dhabyani et al., Data in Brief 2020)",
                "Public download; cite the paper. Normal cases have empty masks.",
                split_rule=SplitRule(0.1, 0.1, "class"), pooled=_ALL),
    DatasetSpec("chexlocalize", "CheXlocalize (chest X-ray)", 7, "chexlocalize", _STANDARD,
                "https://stanfordaimi.azurewebsites.net/ (Saporta et al., Nat. Mach. Intell. 2022)",
                "Stanford AIMI research use agreement (registration required).",
                split_rule=SplitRule(0.2, 0.2, "patient"), masks_optional=True, pooled=_ALL),
    DatasetSpec("synthetic_polyp", "Synthetic polyp-like images", 10, "polyp", _STANDARD,
                "medvlsm_jax.promptgen.synthetic", _SYNTHETIC_ACCESS, synthetic=True),
    DatasetSpec("synthetic_us", "Synthetic ultrasound-like images (BUSI prompt schema)", 7,
                "busi", _STANDARD, "medvlsm_jax.promptgen.synthetic", _SYNTHETIC_ACCESS,
                split_rule=SplitRule(0.1, 0.1, "class"), synthetic=True),
    DatasetSpec("mimic_cxr_lung", "MIMIC-CXR lung segmentation with radiology reports (frontal CXRs)", 2,
                "reports", _STANDARD,
                "Lung masks: 'Chest X-ray segmentation images based on MIMIC-CXR' v1.0.0 (Chen et al., "
                "PhysioNet 2022, https://physionet.org/content/lung-segment-mimic-cxr/1.0.0/: 1,141 frontal "
                "CXRs); images and free-text reports: MIMIC-CXR / MIMIC-CXR-JPG v2 (Johnson et al., "
                "PhysioNet 2019). The paper's appendix F.2 subset; its exact size could not be checked here.",
                "Credentialed PhysioNet access (CITI data-research training, signed data use agreement); "
                "manual download only; no redistribution, no sharing of derived reports.",
                split_rule=SplitRule(0.1, 0.1, "patient"), appendix="F.2",
                preparation="Write a CSV with columns image, mask, report (paths; optional subject = "
                            "patient id) for the downloaded frontal images, their lung masks and the "
                            "study's report, then: medvlsm-data mimic --pairs pairs.csv --out <manual_dir> "
                            "(P0 empty, P1 the report fitted to the text context by the policy of "
                            "medvlsm_jax.data.reports; split 80/10/10 by patient)."),
)

#: Every dataset name; a name's position is its ``dataset_id`` in batches.
DATASETS: tuple[str, ...] = tuple(s.name for s in CATALOGUE)
SPECS: dict[str, DatasetSpec] = {s.name: s for s in CATALOGUE}
#: The 11 datasets of the paper's benchmark (synthetic sets and appendix-only sets excluded).
PAPER_DATASETS: tuple[str, ...] = tuple(s.name for s in CATALOGUE if not (s.synthetic or s.appendix))
#: Pooled set -> its members, in catalogue order.
POOLED: dict[str, tuple[str, ...]] = {
    pool: tuple(s.name for s in CATALOGUE if pool in s.pooled)
    for pool in dict.fromkeys(p for s in CATALOGUE for p in s.pooled)
}
