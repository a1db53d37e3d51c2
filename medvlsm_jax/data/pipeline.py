"""grain input pipelines: :func:`make_loader`.

Order of operations (all deterministic given ``seed``)::

    (dataset_id, record index) for each member  -> concatenate (pooled sets)
    -> shuffle (train) -> pad to full global batches
    -> repeat(num_epochs), then read + prompt choice + preprocess (random_map)   [shuffled]
       read + prompt choice + preprocess (random_map), then repeat(num_epochs)   [in order]
    -> this shard's rows of every global batch -> batch -> tokenize -> IterDataset (-> workers)

Pooled sets concatenate their members and shuffle the union, as the original's
``ConcatDataset`` + shuffling ``DataLoader`` do; each example keeps its ``dataset_id``. Shuffling
and prompt draws are re-seeded per epoch when shuffling (training); an unshuffled loader
(validation, test) draws each record's prompt once, so a repeated validation loader gives the
same batches every epoch and a resumed run validates on exactly what the uninterrupted run did. No split drops examples by default
(``drop_remainder=False``; the original's ``DataLoader`` has ``drop_last=False``): each epoch is
padded to full global batches, ``ceil(N / (batch * shard_count))``, and padding examples
have ``valid=False``, ``index=-1`` and ``dataset_id=-1`` (training weights the loss by
``valid``, :func:`medvlsm_jax.train.losses.batch_loss`).

Sharding (multi-process runs): the example stream and its prompt draws are defined for the whole
run, in *global* batches of ``batch_size * shard_count`` rows; shard ``k`` reads only rows
``[k * batch_size, (k + 1) * batch_size)`` of each. Every shard therefore has the same number
of batches, and the global batches — hence training — do not depend on how many processes
share them (one process with two devices sees the same batches as two processes with one).

Masks: ``mask`` is the training target of :func:`medvlsm_jax.data.masks.training_target`
(``mask_target='soft'``, the original's ``ToTensor`` values, or ``'binary'``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np
from absl import flags

from medvlsm_jax.data import io as data_io
from medvlsm_jax.data import masks
from medvlsm_jax.data.errors import DataError
from medvlsm_jax.data.preprocessing import make_tokenizer, normalize, resize_image
from medvlsm_jax.data.prompts import PromptChoice, select_prompt, validate_prompt
from medvlsm_jax.data.registry import get_spec, members
from medvlsm_jax.data.sources import load_builder, raw_source, source_key
from medvlsm_jax.models.contract import InputContract

log = logging.getLogger(__name__)
PAD = (-1, -1)


@dataclasses.dataclass(frozen=True)
class _Tag:
    """Record index -> (dataset_id, index)."""

    dataset_id: int

    def __call__(self, index: int) -> tuple[int, int]:
        return self.dataset_id, int(index)


class _ShardRows(grain.MapDataset):
    """Shard ``index`` of every global batch: local element ``j`` is the parent's element
    ``(j // b) * b * count + index * b + j % b`` (``b`` = the local batch size)."""

    _MUTATES_ELEMENT_SPEC = False

    def __init__(self, parent: grain.MapDataset, batch_size: int, index: int, count: int):
        super().__init__(parent)
        self._b, self._index, self._count = batch_size, index, count
        self._length = len(parent) // (batch_size * count) * batch_size

    def __len__(self) -> int:
        return self._length

    def _global(self, j: int) -> int:
        return (j // self._b) * self._b * self._count + self._index * self._b + j % self._b

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._global(index)]

    def __str__(self) -> str:
        return f"_ShardRows(b={self._b}, shard={self._index}/{self._count})"


def _shard_examples(total: int, batch_size: int, index: int, count: int) -> int:
    """How many of the first ``total`` stream elements fall in shard ``index``'s rows."""
    full, rem = divmod(total, batch_size * count)
    return full * batch_size + min(max(rem - index * batch_size, 0), batch_size)


def _pad_item(_: int) -> tuple[int, int]:
    return PAD


def _as_str(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


@dataclasses.dataclass(frozen=True)
class _ReadExample:
    """(dataset_id, index), rng -> one preprocessed example (picklable for worker processes)."""

    sources: Mapping[int, Any]
    choice: PromptChoice
    spec: InputContract
    mask_target: str = "soft"

    def __call__(self, item: tuple[int, int], rng: np.random.Generator) -> dict[str, Any]:
        dataset_id, index = item
        if dataset_id < 0:
            return self._padding()
        rec = self.sources[dataset_id][index]
        prompts = {k: [_as_str(v) for v in vs] for k, vs in rec["prompts"].items()}
        image = resize_image(data_io.decode_image(rec["image"]), self.spec.image_size)
        pixels = normalize(image, self.spec.mean, self.spec.std)
        mask = masks.training_target(rec["mask"], self.spec.image_size, self.mask_target,
                                     where=_as_str(rec["mask_name"]))
        return {
            "pixel_values": pixels,
            "mask": mask,
            "prompt": select_prompt(self.choice, prompts, rng),
            "valid": np.bool_(True),
            "index": np.int32(index),
            "dataset_id": np.int32(dataset_id),
            "orig_size": np.array([rec["height"], rec["width"]], np.int32),
            "img_name": _as_str(rec["img_name"]),
            "mask_name": _as_str(rec["mask_name"]),
        }

    def _padding(self) -> dict[str, Any]:
        h, w = self.spec.image_size
        return {
            "pixel_values": np.zeros((h, w, 3), np.float32),
            "mask": np.zeros((h, w), np.float32),
            "prompt": "",
            "valid": np.bool_(False),
            "index": np.int32(-1),
            "dataset_id": np.int32(-1),
            "orig_size": np.zeros(2, np.int32),
            "img_name": "",
            "mask_name": "",
        }


@dataclasses.dataclass(frozen=True)
class _Tokenize:
    """Adds ``input_ids`` and ``attention_mask`` (int32 (B, L)) from the batch's prompts."""

    tokenizer: Any
    max_length: int

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        enc = self.tokenizer([str(p) for p in batch["prompt"]], max_length=self.max_length)
        batch["input_ids"] = np.asarray(enc["input_ids"], np.int32)
        batch["attention_mask"] = np.asarray(enc["attention_mask"], np.int32)
        return batch


@dataclasses.dataclass
class Loader:
    """Iterable over batches (dicts of numpy arrays; keys in :func:`make_loader`).

    ``iter(loader)`` returns a grain ``DatasetIterator``: ``get_state()`` / ``set_state()``
    checkpoint and restore it mid-epoch with identical continuation.
    """

    dataset: grain.IterDataset
    datasets: tuple[str, ...]
    split: str
    batch_size: int
    num_examples: int  # real examples this shard reads in one pass over the split
    steps_per_epoch: int
    num_epochs: int | None
    total_steps: int | None = None  # batches over all epochs (None: forever)

    def __iter__(self) -> grain.DatasetIterator:
        return iter(self.dataset)

    @property
    def num_steps(self) -> int | None:
        """Total batches over all epochs, or None when repeating forever."""
        return self.total_steps


def _member_indices(names: tuple[str, ...], split: str, key: str
                    ) -> tuple[grain.MapDataset, dict[int, Any]]:
    """(dataset_id, index) pairs of every member's split, concatenated in member order.

    A pooled set skips (with a warning) members whose split is optional and was not built,
    e.g. CAMUS train, whose annotation file the release lacks."""
    parts, sources = [], {}
    for name in names:
        spec = get_spec(name)
        built = load_builder(name, key).info.splits
        if split not in built and len(names) > 1 and split in spec.optional_splits:
            log.warning("%s: no %s split built; left out of the pooled set", name, split)
            continue
        source = raw_source(name, split, key)
        sources[spec.dataset_id] = source
        parts.append(grain.MapDataset.range(len(source)).map(_Tag(spec.dataset_id)))
    ds = parts[0] if len(parts) == 1 else grain.MapDataset.concatenate(parts)
    return ds, sources


def _ensure_absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside an absl app, use their defaults."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_loader(
    dataset: str,
    split: str,
    contract: InputContract,
    prompt: str,
    batch_size: int,
    *,
    seed: int = 42,
    data_dir: str | None = None,
    shuffle: bool | None = None,
    num_epochs: int | None = 1,
    drop_remainder: bool | None = None,
    worker_count: int = 0,
    shard_index: int | None = None,
    shard_count: int | None = None,
    tokenizer: Any = None,
    prompt_override: str | None = None,
    read_threads: int = 2,
    prefetch_batches: int = 2,
    mask_target: str = "soft",
) -> Loader:
    """A batched, preprocessed, tokenized loader over ``dataset``'s ``split``.

    Args:
      dataset: a dataset name, ``pooled_polyp`` or ``pooled_all``.
      split: ``train``, ``val`` or ``test``.
      contract: the model's resolved input contract (``ModelSpec.resolve_contract``): size,
        normalisation and text spec (``None`` text: image-only batches, no tokenizer).
      prompt: ``pN``, ``random`` or ``""`` (see :mod:`medvlsm_jax.data.prompts`).
      batch_size: examples per batch (per process when sharded).
      seed: seeds shuffling and prompt draws.
      data_dir: where the datasets were built (default ``$MEDVLSM_DATA_DIR`` or
        ``~/medvlsm_data/tfds``).
      shuffle: defaults to ``split == "train"``.
      drop_remainder: default False for every split, as the original's ``DataLoader``: the
        last batch of each epoch is padded and its padding marked ``valid=False``.
      num_epochs: epochs to iterate (``None``: forever).
      worker_count: grain worker processes (0: read in this process with ``read_threads``).
      shard_index / shard_count: this process's rows of every global batch (default 0 / 1;
        multi-process runs pass :func:`medvlsm_jax.train.sharding.process_block`).
      tokenizer: callable ``tok(texts, max_length=L)`` -> dict with ``input_ids`` and
        ``attention_mask``; defaults to the contract's tokenizer.
      prompt_override: a fixed text for every example (takes precedence over ``prompt``).
      mask_target: ``soft`` (the original's) or ``binary`` (:mod:`medvlsm_jax.data.masks`).

    Batches hold ``pixel_values`` float32 (B, H, W, 3), ``mask`` float32 (B, H, W) in [0, 1]
    (the training target; zeros for padding),
    ``input_ids`` / ``attention_mask`` int32 (B, L) (text models), ``valid`` bool (B,),
    ``index`` / ``dataset_id`` int32 (B,), ``orig_size`` int32 (B, 2) as (height, width), and
    ``img_name`` / ``mask_name`` / ``prompt`` string arrays (B,).
    """
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    shard_index, shard_count = (shard_index or 0), (shard_count or 1)
    if not 0 <= shard_index < shard_count:
        raise DataError(f"shard_index {shard_index} out of range for shard_count {shard_count}")
    shuffle = split == "train" if shuffle is None else shuffle
    drop_remainder = bool(drop_remainder)
    if mask_target not in masks.MASK_TARGETS:
        raise DataError(f"unknown mask target {mask_target!r}; choose from {', '.join(masks.MASK_TARGETS)}")
    names = members(dataset)
    choice = validate_prompt(prompt, prompt_override, names)

    ds, sources = _member_indices(names, split, source_key(data_dir))
    total = len(ds)
    global_batch = batch_size * shard_count
    num_examples = _shard_examples(total, batch_size, shard_index, shard_count)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if drop_remainder:
        steps = total // global_batch
    else:
        steps = math.ceil(total / global_batch)
        pad = steps * global_batch - total
        if pad:
            ds = grain.MapDataset.concatenate([ds, grain.MapDataset.range(pad).map(_pad_item)])
    read = _ReadExample(sources, choice, contract, mask_target)
    if shuffle:  # training: prompt draws change every epoch (the iterator state carries them)
        ds = ds.repeat(num_epochs) if num_epochs != 1 else ds
        ds = ds.random_map(read, seed=seed)
    else:  # evaluation: each record's draw is fixed, so every pass (each epoch's validation) is alike
        ds = ds.random_map(read, seed=seed)
        ds = ds.repeat(num_epochs, reseed_each_epoch=False) if num_epochs != 1 else ds
    if shard_count > 1:
        ds = _ShardRows(ds, batch_size, shard_index, shard_count)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if contract.text is not None:
        tok = tokenizer if tokenizer is not None else make_tokenizer(contract.text)
        ds = ds.map(_Tokenize(tok, contract.text.max_length))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                              prefetch_buffer_size=prefetch_batches))
    if worker_count > 0:
        _ensure_absl_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    if num_epochs is None:
        total_steps = None
    else:
        total_steps = total * num_epochs // global_batch if drop_remainder else steps * num_epochs
    return Loader(it, names, split, batch_size, num_examples, steps, num_epochs, total_steps)
