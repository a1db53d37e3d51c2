"""Shared TFDS builder for datasets in the medvlsm layout (no TensorFlow needed).

Records are written to ArrayRecord in annotation order (``disable_shuffling``), so record ``i``
of a split is entry ``i`` of its annotation file(s); read them back with
``builder.as_data_source()``. TFDS's ``Image`` feature would encode numpy arrays with
TensorFlow, so the builder hands it encoded bytes (see :func:`medvlsm_jax.data.io.image_bytes`)
and readers skip TFDS decoding and decode with PIL themselves. Masks are the mask files' own
bytes (:func:`medvlsm_jax.data.io.mask_bytes`), decoded at use by :mod:`medvlsm_jax.data.masks`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import pathlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from medvlsm_jax.data import io as data_io
from medvlsm_jax.data.errors import DataError, DuplicateAnnotationsWarning
from medvlsm_jax.data.registry import DatasetSpec, SplitSource, get_spec, manual_download_instructions

log = logging.getLogger(__name__)

FILE_FORMAT = "array_record"
#: Decoders that leave images and masks as stored bytes (decode with medvlsm_jax.data.io).
RAW_DECODERS = {"image": tfds.decode.SkipDecoding(), "mask": tfds.decode.SkipDecoding()}


def dataset_root(manual_dir: pathlib.Path, name: str) -> pathlib.Path:
    """``manual_dir`` itself when it holds ``anns/``, else ``manual_dir/<name>``."""
    return manual_dir if (manual_dir / "anns").is_dir() else manual_dir / name


def _file_digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_empty_json_list(path: pathlib.Path) -> bool:
    return path.read_bytes().strip() in (b"[]", b"")


def find_duplicate_annotations(
    paths: list[pathlib.Path], others: list[pathlib.Path]
) -> list[tuple[pathlib.Path, pathlib.Path]]:
    """Pairs (p, q) of byte-identical, non-empty annotation files with p in ``paths`` and q in
    ``paths`` (later entries) or ``others``."""
    digests = {p: _file_digest(p) for p in [*paths, *others] if not _is_empty_json_list(p)}
    pairs = []
    for i, p in enumerate(paths):
        for q in [*paths[i + 1:], *others]:
            if p in digests and q in digests and p != q and digests[p] == digests[q]:
                pairs.append((p, q))
    return pairs


def check_annotations(path: pathlib.Path, spec: DatasetSpec
                      ) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """Parse one annotation file and validate every record against the dataset's prompt keys:
    ``([(index, record), ...] of the valid records, [problem, ...])``, every problem reported."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return [], [f"{spec.name}: cannot read annotation file {path}: {err}"]
    if not isinstance(records, list):
        return [], [f"{spec.name}: {path} must hold a JSON list of records"]
    expected = set(spec.prompt_keys)
    valid, problems = [], []
    for i, rec in enumerate(records):
        where = f"{spec.name}: {path} record {i}"
        if not isinstance(rec, dict) or not all(
                isinstance(rec.get(k), str) for k in ("img_name", "mask_name")):
            problems.append(f"{where}: needs string fields img_name and mask_name")
            continue
        prompts = rec.get("prompts")
        if not isinstance(prompts, dict) or set(prompts) != expected:
            have = sorted(prompts) if isinstance(prompts, dict) else prompts
            problems.append(f"{where}: prompts must have exactly the keys "
                            f"{list(spec.prompt_keys)}, found {have}")
            continue
        bad = [f"{where}: prompt {key} must be a string or a non-empty list of strings, got {value!r}"
               for key, value in prompts.items()
               if not (isinstance(value, str) or (isinstance(value, list) and value
                                                  and all(isinstance(v, str) for v in value)))]
        problems += bad
        if not bad:
            valid.append((i, rec))
    return valid, problems


def load_annotations(path: pathlib.Path, spec: DatasetSpec) -> list[dict[str, Any]]:
    """Parse and validate one annotation file; raises a DataError naming its first problem."""
    valid, problems = check_annotations(path, spec)
    if problems:
        raise DataError(problems[0])
    return [rec for _, rec in valid]


#: Problems of a source listed in a build error (the total is always given).
MAX_PROBLEMS = 20


def problems_error(name: str, root: pathlib.Path, problems: list[str]) -> DataError:
    """One DataError listing the first :data:`MAX_PROBLEMS` problems of a source and their total."""
    shown = problems[:MAX_PROBLEMS]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    head = (f"{name}: {len(problems)} problem{'s' if len(problems) != 1 else ''} in the source {root}"
            f"{f' (the first {len(shown)} below)' if more else ''}; nothing was built or replaced. "
            "Fix them and rerun:")
    return DataError(head + "".join(f"\n  {p}" for p in shown) + more)


def prompt_lists(prompts: Mapping[str, str | list[str]]) -> dict[str, list[str]]:
    """Every prompt value as a list (a single string becomes a one-element list)."""
    return {k: [v] if isinstance(v, str) else list(v) for k, v in prompts.items()}


class MedvlsmBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base builder: subclasses set ``name`` (a key of the registry) and nothing else."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release.",
        "2.0.0": "Masks stored losslessly (the file's own bytes) instead of binarised at > 127.5; "
                 "training targets and scoring ground truths are derived at use.",
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        explicit_name = cls.__dict__.get("name")  # read before TFDS fills in a default
        super().__init_subclass__(**kwargs)
        if explicit_name:
            cls.MANUAL_DOWNLOAD_INSTRUCTIONS = manual_download_instructions(cls.name)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """The builder's source file. TFDS's default goes through ``importlib.resources``,
        which fails when the package is imported as a namespace package (e.g. an editable
        install made before ``medvlsm_jax/__init__.py`` existed)."""
        return epath.Path(inspect.getfile(cls))

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("file_format", FILE_FORMAT)
        super().__init__(**kwargs)
        #: Every problem met while generating (bad records are skipped, so one pass finds them
        #: all); :func:`medvlsm_jax.data.sources.build_dataset` refuses a build that has any.
        self.problems: list[str] = []
        self.source_root: pathlib.Path | None = None

    def _log_download_bytes(self) -> None:
        """TFDS prints "Downloading and preparing dataset"; nothing is downloaded here (the
        build is logged by :func:`medvlsm_jax.data.sources.build_dataset`)."""

    def _log_download_done(self) -> None:
        """TFDS prints "downloaded and prepared"; see :meth:`_log_download_bytes`."""

    @property
    def spec(self) -> DatasetSpec:
        return get_spec(self.name)

    def _info(self) -> tfds.core.DatasetInfo:
        spec = self.spec
        prompts = {k: tfds.features.Sequence(tfds.features.Text()) for k in spec.prompt_keys}
        features = tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            # the mask file's own bytes (JPEG or PNG, any mode): see medvlsm_jax.data.masks
            "mask": tfds.features.Image(shape=(None, None, None)),
            "prompts": tfds.features.FeaturesDict(prompts),
            "img_name": tfds.features.Text(),
            "mask_name": tfds.features.Text(),
            "height": tfds.features.Scalar(np.int32),
            "width": tfds.features.Scalar(np.int32),
            "index": tfds.features.Scalar(np.int32),
            "dataset": tfds.features.Text(),
        })
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{spec.title} in the medvlsm layout with prompts "
                        f"{spec.prompt_keys[0]}..{spec.prompt_keys[-1]}. Source: {spec.source}",
            features=features,
            homepage="https://github.com/naamiinepal/medvlsm",
            disable_shuffling=True,
        )

    #: Sizes and seed of a synthetic dataset generated into an empty manual dir.
    SYNTHETIC_SIZES: ClassVar[dict[str, int]] = {"n_train": 200, "n_val": 50, "n_test": 50}
    SYNTHETIC_SEED: ClassVar[int] = 0

    def prepare_manual_dir(self, manual_dir: pathlib.Path) -> None:
        """Called before building: a synthetic set is written into ``manual_dir`` with
        :func:`medvlsm_jax.promptgen.synthetic.write_synthetic_dataset` when it does not hold
        it yet; the rest is the shared medvlsm build."""
        if not self.spec.synthetic or (dataset_root(manual_dir, self.name) / "anns").is_dir():
            return
        from medvlsm_jax.promptgen.synthetic import write_synthetic_dataset  # noqa: PLC0415

        write_synthetic_dataset(manual_dir, name=self.name, seed=self.SYNTHETIC_SEED,
                                **self.SYNTHETIC_SIZES)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = dataset_root(pathlib.Path(dl_manager.manual_dir), self.name)
        self.source_root = root
        spec = self.spec
        available = {}
        for split, sources in spec.splits.items():
            missing = [s.ann_file for s in sources if not (root / "anns" / s.ann_file).is_file()]
            if not missing:
                available[split] = sources
            elif split in spec.optional_splits:
                log.warning("%s: no %s split (%s absent from %s)", self.name, split,
                            ", ".join(missing), root / "anns")
            else:
                self.problems.append(f"{self.name}: annotation file(s) {', '.join(missing)} missing "
                                     f"from {root / 'anns'} (needed for the {split} split)")
        self._check_duplicates(root, available)
        if not available:
            raise problems_error(self.name, root, self.problems)
        self._pending = dict(available)
        return {split: self._generate_split(root, split, sources)
                for split, sources in available.items()}

    def _generate_split(self, root: pathlib.Path, split: str, sources: tuple[SplitSource, ...]
                        ) -> Iterator[tuple[str, dict[str, Any]]]:
        yielded = 0
        for key_example in self._generate_examples(root, sources):
            yielded += 1
            yield key_example
        self._pending.pop(split, None)
        if not yielded and self.problems:
            # TFDS stops at an empty split: check the splits not generated yet, then report all
            for other in list(self._pending.values()):
                for _ in self._generate_examples(root, other):
                    pass
            raise problems_error(self.name, root, self.problems)

    def _check_duplicates(self, root: pathlib.Path,
                          splits: Mapping[str, tuple[SplitSource, ...]]) -> None:
        """Identical files within the dataset are an error; identical to another dataset's
        annotation file (the released cvc300 test.json is ColonDB's) is reported as a warning."""
        own = list(dict.fromkeys(root / "anns" / s.ann_file
                                 for sources in splits.values() for s in sources))
        others = [p for p in sorted(root.parent.glob("*/anns/*.json"))
                  if p.parent.parent != root]
        for p, q in find_duplicate_annotations(own, others):
            message = f"{self.name}: annotation file {p} is byte-identical to {q}"
            if q in own:
                self.problems.append(message)
                continue
            warnings.warn(message, DuplicateAnnotationsWarning, stacklevel=2)
            log.warning(message)

    def _generate_examples(self, root: pathlib.Path, sources: tuple[SplitSource, ...]
                           ) -> Iterator[tuple[str, dict[str, Any]]]:
        index = 0
        for source in sources:
            ann_path = root / "anns" / source.ann_file
            records, problems = check_annotations(ann_path, self.spec)
            self.problems += problems
            for i, rec in records:
                where = f"{self.name}: {ann_path} record {i}"
                try:
                    example = self._example(root, source, rec, index, where)
                except DataError as err:  # reported with the others once the pass is done
                    self.problems.append(str(err))
                    continue
                yield f"{source.ann_file}:{i:07d}", example
                index += 1

    def _example(self, root: pathlib.Path, source: SplitSource, rec: Mapping[str, Any],
                 index: int, where: str) -> dict[str, Any]:
        img_path = root / source.images_dir / rec["img_name"]
        mask_path = root / source.masks_dir / rec["mask_name"]
        try:
            image, (height, width) = data_io.image_bytes(img_path)
            mask, mask_hw = data_io.mask_bytes(mask_path)
        except DataError as err:
            raise DataError(f"{where}: {err}") from err
        if mask_hw != (height, width):
            raise DataError(f"{where}: mask {mask_path} is {mask_hw[1]}x{mask_hw[0]} "
                            f"(WxH) but image {img_path} is {width}x{height}")
        return {
            "image": image,
            "mask": mask,
            "prompts": prompt_lists(rec["prompts"]),
            "img_name": rec["img_name"],
            "mask_name": rec["mask_name"],
            "height": height,
            "width": width,
            "index": index,
            "dataset": self.name,
        }
