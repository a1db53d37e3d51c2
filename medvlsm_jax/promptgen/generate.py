"""Annotation files in the medvlsm schema from an image folder, a mask folder and metadata.

Pipeline: :func:`pair_images_masks` -> :func:`build_record` per pair (attributes from the mask
and image, metadata, family templates) -> :func:`assign_splits` -> :func:`write_annotations`.
:func:`generate_annotations` runs all of it (the ``medvlsm-prompts`` command).
"""

from __future__ import annotations

import json
import pathlib
from typing import Mapping

import numpy as np
from PIL import Image

from .datasets import DatasetSpec, get_dataset
from .errors import PromptGenError
from .masks import MaskDescription, describe_mask
from .metadata import (busi_class, camus_info, camus_name_parts, chex_view,
                       read_chexpert_labels)
from .templates import BUSI_REGULARITY, CAMUS_LABELS, CHEX_LABELS, Prompts
from .words import number_to_words

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
Record = dict


# ---------------------------------------------------------------------- files
def read_array(path: pathlib.Path, what: str) -> np.ndarray:
    """Pixels of an image or mask file, with an error naming the file when unreadable."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB") if im.mode in ("P", "CMYK", "YCbCr") else im)
    except (OSError, ValueError) as e:
        raise PromptGenError(f"{path}: cannot read {what} ({e})") from e


def _list_images(folder: pathlib.Path, recursive: bool) -> list[pathlib.Path]:
    if not folder.is_dir():
        raise PromptGenError(f"{folder}: not a directory")
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def pair_images_masks(images_dir: pathlib.Path, masks_dir: pathlib.Path, spec: DatasetSpec
                      ) -> list[tuple[pathlib.Path, pathlib.Path]]:
    """(image, mask) pairs. A mask belongs to the image whose stem is the longest prefix of the
    mask's stem followed by nothing or ``_`` (``x.png``, ``x_Segmentation.png``,
    ``x_atelectasis.png``, ``mask_1/x_gt.png``); masks are searched recursively."""
    images = _list_images(pathlib.Path(images_dir), recursive=False)
    by_stem: dict[str, pathlib.Path] = {}
    for image in images:
        if image.stem in by_stem:
            raise PromptGenError(f"{image}: two images share the name {image.stem!r} "
                                 f"({by_stem[image.stem].name})")
        by_stem[image.stem] = image
    pairs, used = [], set()
    for mask in _list_images(pathlib.Path(masks_dir), recursive=True):
        parts = mask.stem.split("_")
        stem = next(("_".join(parts[:k]) for k in range(len(parts), 0, -1)
                     if "_".join(parts[:k]) in by_stem), None)
        if stem is None:
            raise PromptGenError(f"{mask}: no image in {images_dir} matches this mask")
        pairs.append((by_stem[stem], mask))
        used.add(stem)
    if not spec.masks_optional:
        unmatched = [str(by_stem[s]) for s in by_stem if s not in used]
        if unmatched:
            raise PromptGenError(f"no mask in {masks_dir} for {len(unmatched)} image(s): "
                                 f"{', '.join(unmatched[:5])}")
    if not pairs:
        raise PromptGenError(f"no image/mask pairs found in {images_dir} and {masks_dir}")
    return sorted(pairs, key=lambda p: (p[0].name, str(p[1])))


# ---------------------------------------------------------------------- prompt values
def lesion_values(desc: MaskDescription) -> dict[str, str]:
    """Worded attributes of the P0-P9 lesion family. A mask whose components are all too
    small to get a size class is called ``tiny`` (the original wrote an empty word)."""
    return {"number": number_to_words(desc.number), "size": ", ".join(desc.sizes) or "tiny",
            "colour": desc.colour or "", "shape": desc.shape or "",
            "location": ", ".join(desc.locations)}


def busi_values(desc: MaskDescription, tumor_type: str) -> dict[str, str]:
    values = lesion_values(desc)
    del values["colour"]
    return {**values, "tumor_type": tumor_type, "regularity": BUSI_REGULARITY[tumor_type],
            "tumors": "tumor" if desc.number == 1 else "tumors"}


def camus_values(desc: MaskDescription, mask_rel: pathlib.PurePath, image: pathlib.Path,
                 info_root: pathlib.Path | None) -> dict[str, str]:
    """CAMUS label from the ``mask_<k>`` folder (1 LV cavity, 2 myocardium, 3 LA cavity)."""
    folder = mask_rel.parts[0] if len(mask_rel.parts) > 1 else ""
    if not (folder.startswith("mask_") and folder[5:] in ("1", "2", "3")):
        raise PromptGenError(f"{mask_rel}: CAMUS masks must sit in mask_1/, mask_2/ or mask_3/ "
                             "(left ventricular cavity, myocardium, left atrium cavity)")
    if info_root is None:
        raise PromptGenError(f"{image}: CAMUS needs --metadata <folder of patientXXXX/Info_*.cfg>")
    parts = camus_name_parts(image)
    info = camus_info(info_root, parts["patient"], parts["view"])
    return {"label": CAMUS_LABELS[int(folder[5:]) - 1],
            "chambers": "two" if parts["view"] == "2CH" else "four",
            "cycle": "systole" if parts["phase"] == "ES" else "diastole",
            "sex": "female" if info["Sex"] == "F" else "male",
            "age": number_to_words(int(info["Age"])),
            "quality": info["ImageQuality"].lower(), "shape": desc.shape or ""}


def chex_values(desc: MaskDescription, image: pathlib.Path, mask: pathlib.Path,
                labels: Mapping[str, tuple[str, ...]] | None, labels_path: pathlib.Path | None
                ) -> dict[str, str]:
    """CheXlocalize: label from the mask suffix, view from the name, observations from CSV;
    an image with no positive observation lists ``No Finding``."""
    suffix = mask.stem[len(image.stem) + 1:]
    if suffix not in CHEX_LABELS:
        raise PromptGenError(f"{mask}: CheXlocalize mask names must end in _<label> with label "
                             f"in {sorted(CHEX_LABELS)}")
    if labels is None:
        raise PromptGenError(f"{image}: CheXlocalize needs --metadata <CheXpert labels CSV>")
    if image.name not in labels:
        raise PromptGenError(f"{image.name}: not listed in the labels CSV {labels_path}")
    return {"label": CHEX_LABELS[suffix], "view": chex_view(image), "shape": desc.shape or "",
            "location": ", ".join(desc.locations),
            "pathologies": ", ".join(labels[image.name] or ("No Finding",))}


class PromptBuilder:
    """Prompts of one dataset: loads its metadata once, then :meth:`prompts` per pair."""

    def __init__(self, dataset: str, metadata: pathlib.Path | None = None,
                 allow_empty: bool = False):
        self.spec = get_dataset(dataset)
        self.family = self.spec.family
        self.metadata = pathlib.Path(metadata) if metadata is not None else None
        self.allow_empty = allow_empty
        self.labels = None
        if self.family.name == "chexlocalize" and self.metadata is not None:
            self.labels = read_chexpert_labels(self.metadata)

    def prompts(self, desc: MaskDescription, image: pathlib.Path, mask: pathlib.Path,
                mask_rel: pathlib.PurePath) -> Prompts:
        family = self.family.name
        if family == "busi":
            tumor_type = busi_class(image)
            if (tumor_type == "normal") != (desc.number == 0):
                raise PromptGenError(f"{mask}: BUSI {tumor_type} case with "
                                     f"{'a tumour in its' if desc.number else 'an empty'} mask")
            if tumor_type == "normal":
                return self.family.render_empty()
            return self.family.render(busi_values(desc, tumor_type))
        if desc.number == 0:
            if self.allow_empty and self.family.empty is not None:
                return self.family.render_empty()
            hint = " (use --allow-empty for the paper's 'no <class>' prompts)" \
                if self.family.empty is not None else ""
            raise PromptGenError(f"{mask}: the mask has no foreground{hint}")
        if family == "camus":
            return self.family.render(camus_values(desc, mask_rel, image, self.metadata))
        if family == "chexlocalize":
            return self.family.render(chex_values(desc, image, mask, self.labels, self.metadata))
        return self.family.render(lesion_values(desc))


def build_record(builder: PromptBuilder, image: pathlib.Path, mask: pathlib.Path,
                 masks_dir: pathlib.Path, index: int) -> Record:
    """One annotation record in the medvlsm schema."""
    mask_px = read_array(mask, "mask")
    image_px = read_array(image, "image")
    if mask_px.shape[:2] != image_px.shape[:2]:
        raise PromptGenError(f"{mask}: mask size {mask_px.shape[1]}x{mask_px.shape[0]} does not "
                             f"match image {image} ({image_px.shape[1]}x{image_px.shape[0]})")
    desc = describe_mask(mask_px, image_px)
    mask_rel = pathlib.PurePosixPath(mask.relative_to(masks_dir).as_posix())
    return {"bbox": desc.bbox, "cat": 0, "segment_id": image.stem, "img_name": image.name,
            "mask_name": str(mask_rel),
            "sentences": [{"idx": 0, "sent_id": index, "sent": ""}], "sentences_num": 1,
            "prompts": builder.prompts(desc, image, mask, mask_rel)}


# ---------------------------------------------------------------------- splits
def _group_key(record: Record, group: str) -> str:
    return record["img_name"].split("_")[0] if group == "patient" else record["img_name"]


def assign_splits(records: list[Record], dataset: str, seed: int = 0
                  ) -> dict[str, list[Record]]:
    """Seeded split with the dataset's fractions (see :mod:`.datasets`), by group; BUSI-like
    datasets are split class by class."""
    spec = get_dataset(dataset).split
    strata: dict[str, list[str]] = {}
    for r in records:
        stratum = busi_class(pathlib.Path(r["img_name"])) if spec.group == "class" else ""
        keys = strata.setdefault(stratum, [])
        key = _group_key(r, spec.group)
        if key not in keys:
            keys.append(key)
    rng = np.random.default_rng(seed)
    split_of: dict[str, str] = {}
    for stratum in sorted(strata):
        keys = sorted(strata[stratum])
        order = [keys[i] for i in rng.permutation(len(keys))]
        n_val = round(spec.val * len(keys))
        n_test = min(round(spec.test * len(keys)), len(keys) - n_val)
        for i, key in enumerate(order):
            split_of[key] = "val" if i < n_val else ("test" if i < n_val + n_test else "train")
    return _split_records(records, lambda r: split_of[_group_key(r, spec.group)])


def read_split_file(path: pathlib.Path) -> dict[str, str]:
    """Image name -> split, from a JSON ``{"train": [names], "val": [...], "test": [...]}`` or
    from a folder of medvlsm annotation files (``train.json``, ``val.json``, ``test.json``) —
    e.g. the paper's release, to regenerate prompts with its exact split."""
    path = pathlib.Path(path)
    try:
        if path.is_dir():
            lists = {s: [r["img_name"] for r in json.loads((path / f"{s}.json").read_text())]
                     for s in SPLITS if (path / f"{s}.json").exists()}
        else:
            lists = json.loads(path.read_text())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PromptGenError(f"{path}: cannot read the split file ({e})") from e
    if not isinstance(lists, dict) or not set(lists) <= set(SPLITS) or not lists:
        raise PromptGenError(f"{path}: a split file maps some of {SPLITS} to lists of image names")
    return {name: split for split, names in lists.items() for name in names}


def apply_split(records: list[Record], split: pathlib.Path | Mapping[str, str]
                ) -> dict[str, list[Record]]:
    """Split records by image name, from a split file (:func:`read_split_file`) or a mapping."""
    split_of = read_split_file(split) if isinstance(split, (str, pathlib.Path)) else split
    missing = sorted({r["img_name"] for r in records if r["img_name"] not in split_of})
    if missing:
        raise PromptGenError(f"{split if isinstance(split, (str, pathlib.Path)) else 'split'}: "
                             f"{len(missing)} image(s) are in no split, e.g. "
                             f"{', '.join(missing[:5])}")
    return _split_records(records, lambda r: split_of[r["img_name"]])


def _split_records(records, split_of) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for r in records:
        out[split_of(r)].append(r)
    return out


# ---------------------------------------------------------------------- all of it
def write_annotations(splits: Mapping[str, list[Record]], out_dir: pathlib.Path) -> None:
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        (out_dir / f"{split}.json").write_text(json.dumps(list(splits.get(split, []))))


def generate_annotations(dataset: str, images_dir: pathlib.Path, masks_dir: pathlib.Path,
                         out_dir: pathlib.Path | None = None, *,
                         metadata: pathlib.Path | None = None,
                         split: pathlib.Path | Mapping[str, str] | None = None, seed: int = 0,
                         allow_empty: bool = False) -> dict[str, list[Record]]:
    """Records of every image/mask pair, split (``split``: a split file or an image name ->
    split mapping; else seeded with the dataset's fractions) and, when ``out_dir`` is given,
    written as ``{train,val,test}.json``."""
    builder = PromptBuilder(dataset, metadata, allow_empty)
    masks_dir = pathlib.Path(masks_dir)
    pairs = pair_images_masks(pathlib.Path(images_dir), masks_dir, builder.spec)
    records = [build_record(builder, image, mask, masks_dir, i)
               for i, (image, mask) in enumerate(pairs)]
    splits = (apply_split(records, split) if split is not None
              else assign_splits(records, dataset, seed))
    if out_dir is not None:
        write_annotations(splits, out_dir)
    return splits
