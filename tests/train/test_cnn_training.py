"""The image-only CNN baselines end to end through the one trainer: train_and_evaluate on the
tiny built dataset, BatchNorm statistics carried through training, checkpoints and the export,
image-only inputs everywhere, and no zero-shot mode."""

import csv
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

import medvlsm_jax
from medvlsm_jax.config import load_config
from medvlsm_jax.train import loop
from medvlsm_jax.train.run import build_run
from tests.train.conftest import SIZES


def cnn_config(data_dir: str, model: str = "unet"):
    c = load_config(f"cnn:model={model},dataset=synthetic_polyp,variant=tiny,image_size=32")
    c.data.data_dir = data_dir
    # batch 3: 8 training images give two full batches and a partial one of 2 (kept, as medvlsm does)
    c.train.update(batch_size=3, num_epochs=2, min_epochs=1, progress=False, log_every_steps=1,
                   mixed_precision=False)
    # bilinear_probs: the resize medvlsm_jax.load(...).predict uses, so export and evaluation compare
    c.eval.update(batch_size=3, write_masks=True, hd95=False, resize="bilinear_probs")
    return c


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def unet_run(tiny_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("unet")
    return workdir, loop.train_and_evaluate(cnn_config(tiny_data_dir), str(workdir))


def test_image_only_batches_reach_the_model_without_text(tiny_data_dir):
    run = build_run(cnn_config(tiny_data_dir))
    assert run.contract.text is None and run.tokenizer is None
    assert tuple(run.contract.input_keys) == ("pixel_values",)
    batch = next(iter(loop.make_loader(run, "synthetic_polyp", "train", 3, train=True)))
    assert "input_ids" not in batch and "attention_mask" not in batch
    inputs = loop.model_inputs(run, None, "train", batch, run.init_state)
    assert "input_ids" not in inputs and inputs["pixel_values"].shape == (3, 32, 32, 3)


def test_unet_trains_evaluates_and_exports_with_its_batch_statistics(unet_run, tiny_data_dir):
    workdir, out = unet_run
    meta, run, state = out["meta"], out["run"], out["state"]
    steps = -(-SIZES["train"] // 3)
    assert meta["step"] == 2 * steps and meta["stop_reason"] == "max_epochs"
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in meta["history"])
    # BatchNorm trained in train mode: the running statistics left their initial 0 / 1
    init_rest = jax.tree.leaves(run.init_state.rest)
    trained_rest = jax.tree.leaves(state.rest)
    assert len(trained_rest) == len(init_rest) > 0
    moved = [not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(init_rest, trained_rest)
             if np.issubdtype(np.asarray(a).dtype, np.floating)]
    assert moved and all(moved)
    rows = _rows(workdir / "eval" / "per_image.csv")
    assert len(rows) == SIZES["test"] and all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    assert {r["prompt"] for r in rows} <= {""}  # no prompt for image-only models
    # the export carries the statistics: its masks are the evaluation's masks
    seg = medvlsm_jax.load(out["export"])
    assert not seg.takes_text and seg.contract.image_size == (32, 32)
    images = pathlib_images(tiny_data_dir, [r["img_name"] for r in rows])
    masks_dir = workdir / "eval" / "synthetic_polyp" / "masks"
    for row, image in zip(rows, images):
        saved = np.asarray(Image.open(masks_dir / row["mask_name"])) > 0
        np.testing.assert_array_equal(seg.predict(image), saved)


def pathlib_images(data_dir, names):
    root = pathlib.Path(data_dir).parent / "manual" / "synthetic_polyp" / "images"
    return [np.asarray(Image.open(root / n).convert("RGB")) for n in names]


def test_evaluating_the_checkpoint_restores_the_statistics(unet_run, tiny_data_dir):
    workdir, out = unet_run
    before = _rows(workdir / "eval" / "per_image.csv")
    res = loop.evaluate_checkpoint(cnn_config(tiny_data_dir), str(workdir))
    after = _rows(workdir / "eval" / "per_image.csv")
    assert [r["dice"] for r in after] == [r["dice"] for r in before]
    assert len(res["results"]["synthetic_polyp"]["rows"]) == SIZES["test"]


@pytest.mark.parametrize("model", ["unetpp", "deeplabv3plus"])
def test_the_other_cnns_train_through_the_same_trainer(model, tiny_data_dir, tmp_path):
    c = cnn_config(tiny_data_dir, model)
    c.train.update(num_epochs=1, max_steps=2)
    c.eval.update(write_masks=False, overlays=0)
    out = loop.train_and_evaluate(c, str(tmp_path))
    assert out["meta"]["step"] == 2
    assert len(_rows(tmp_path / "eval" / "per_image.csv")) == SIZES["test"]


def test_zero_shot_is_refused_for_a_cnn(tiny_data_dir, tmp_path):
    with pytest.raises(ValueError, match="zero-shot"):
        loop.evaluate_zeroshot(cnn_config(tiny_data_dir), str(tmp_path))
