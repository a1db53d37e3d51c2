"""The trainer end to end on a tiny built dataset: outputs, export, cache identity, NaN stop,
errors before compilation."""

import csv
import dataclasses
import json
import os
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

import medvlsm_jax
from medvlsm_jax.data.errors import DataError
from medvlsm_jax.train import checkpoint, loop
from medvlsm_jax.train.run import build_run
from tests.train.conftest import SIZES, tiny_config


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


@pytest.fixture(scope="module")
def cached_run(tiny_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cached")
    return workdir, loop.train_and_evaluate(tiny_config(tiny_data_dir), str(workdir))


def test_run_writes_results_checkpoints_and_loadable_export(cached_run, tiny_data_dir):
    workdir, out = cached_run
    meta = out["meta"]
    assert meta["epoch"] == 2 and meta["step"] == 2 * SIZES["train"] // 4 and meta["stop_reason"] == "max_epochs"
    assert len(meta["history"]) == 2 and all(np.isfinite(h["val_loss"]) for h in meta["history"])
    with open(workdir / "eval" / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == SIZES["test"] and {"dice", "iou", "hd95", "prompt"} <= set(rows[0])
    results = json.loads((workdir / "eval" / "results.json").read_text())
    assert results["synthetic_polyp"]["dice"]["n"] == SIZES["test"]
    masks = os.listdir(workdir / "eval" / "synthetic_polyp" / "masks")
    assert len(masks) == SIZES["test"]
    originals = pathlib.Path(tiny_data_dir).parent / "manual" / "synthetic_polyp" / "masks"
    for row in rows:  # saved at the original size, scored against the original mask
        pred = np.asarray(Image.open(workdir / "eval" / "synthetic_polyp" / "masks" / row["mask_name"])) > 0
        gt = np.asarray(Image.open(originals / row["mask_name"]).convert("L")) > 0
        assert pred.shape == gt.shape == (40, 52)
        union = pred.sum() + gt.sum()
        want = 2 * np.logical_and(pred, gt).sum() / union if union else 1.0
        assert float(row["dice"]) == pytest.approx(want, abs=1e-5)
    assert results["synthetic_polyp"]["dice"]["mean"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]))
    assert (workdir / "metrics.jsonl").read_text().count("train/loss") == meta["step"]
    assert os.listdir(workdir / "tensorboard")
    seg = medvlsm_jax.load(out["export"])
    assert seg.contract == dataclasses.replace(out["run"].contract, text=seg.contract.text)
    assert seg.contract.image_size == (32, 32)  # trained size, not 352
    image = np.zeros((40, 52, 3), np.uint8)
    (mask,) = seg.predict([image], "a pink polyp")
    assert mask.shape == (40, 52) and mask.dtype == bool
    assert out["cache"] is not None and out["cache"].stats()["hits"] > 0


def test_cache_gives_the_same_training_as_encoding_every_step(cached_run, tiny_data_dir, tmp_path):
    _, cached = cached_run
    plain = loop.train_and_evaluate(tiny_config(tiny_data_dir, cache="off"), str(tmp_path))
    assert plain["cache"] is None
    for a, b in zip(_leaves(cached["state"]), _leaves(plain["state"]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert plain["meta"]["history"] == [{**h, "seconds": p["seconds"], "compile_s": p["compile_s"]} for h, p in
                                        zip(cached["meta"]["history"], plain["meta"]["history"])]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir, lr=1e30, checkpoint_every_steps=1, cache="off")
    with pytest.raises(loop.NonFiniteLossError, match="last good checkpoint"):
        loop.train_and_evaluate(config, str(tmp_path))
    run = build_run(config)
    ckpts = checkpoint.Checkpoints(str(tmp_path))
    state, meta, data = ckpts.restore_latest(run.init_state)
    ckpts.close()
    assert meta["step"] >= 1 and int(state.step) == meta["step"] and data
    assert all(np.isfinite(x).all() for x in _leaves(state))


@pytest.mark.parametrize("change,error,match", [
    (lambda c: setattr(c.model, "name", "unet3000"), KeyError, "unknown model"),
    (lambda c: setattr(c.data, "dataset", "mnist"), DataError, "unknown dataset"),
    (lambda c: setattr(c.data, "prompt", "p42"), DataError, "no prompt 'p42'"),
    (lambda c: setattr(c.train, "loss", "focal"), ValueError, "unknown loss"),
    (lambda c: setattr(c.eval, "resize", "cubic"), ValueError, "eval.resize"),
])
def test_bad_config_fails_before_compilation(tiny_data_dir, monkeypatch, change, error, match):
    config = tiny_config(tiny_data_dir)
    change(config)
    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled before validating"))
    with pytest.raises(error, match=match):
        build_run(config)


def test_batch_not_divisible_by_devices_fails_before_compilation(tiny_data_dir, monkeypatch):
    config = tiny_config(tiny_data_dir, batch_size=6)
    monkeypatch.setattr(jax, "device_count", lambda: 4)
    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled before validating"))
    with pytest.raises(ValueError, match="train.batch_size=6 is not divisible by the 4 devices"):
        build_run(config)
