"""The trainer's and the evaluation's plumbing, against references computed independently
(issue 18): each test here catches one of the hand mutations the suite used to miss (see
``tools/mutate.py``).

* the train step scales its updates by the plateau schedule's scale;
* a scripted val-loss / val-Dice sequence through the real loop, with a resume in the middle,
  epoch by epoch against torch ``ReduceLROnPlateau`` and Lightning ``EarlyStopping``, and the
  returned "best" state is the state of the best epoch;
* validation means ignore the padding of the last batch;
* the feature cache serves, for list-valued prompts drawn per epoch, the features of the text
  drawn *this* epoch;
* evaluation rows against metrics recomputed with numpy from the saved PNGs and the original
  masks (eval set not a multiple of the batch, non-square originals unlike the model size), the
  saved masks against torch's ``nearest-exact`` resize.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from medvlsm_jax.evaluation import evaluate as evaluate_lib
from medvlsm_jax.train import checkpoint, loop, optim
from medvlsm_jax.train import sharding as shd
from medvlsm_jax.train.cache import FeatureCache
from medvlsm_jax.train.run import build_run
from tests.train.conftest import SIZES, tiny_config

torch = pytest.importorskip("torch")
DS = "synthetic_polyp"


def _params(state):
    return [np.asarray(x).copy() for x in jax.tree.leaves(state.params)]


def _with_scale(state, scale, sharding):
    sched = state.schedule
    new = jax.device_put(jnp.asarray(scale, optim.schedule_scale(sched).dtype), sharding)
    sched = sched._replace(scale=new) if hasattr(sched, "_replace") else {**sched, "scale": new}
    return state.replace(schedule=sched)


# --------------------------------------------------------------------------- plateau scale


def test_train_step_scales_updates_by_the_plateau_scale(tiny_data_dir):
    run = build_run(tiny_config(tiny_data_dir, schedule="plateau", cache="off"))
    batch = next(iter(loop.make_loader(run, DS, "train", 4, train=True)))
    p0 = _params(run.init_state)

    def moved(scale):
        state = _with_scale(jax.tree.map(lambda x: x.copy(), run.init_state), scale, run.replicated)
        new, _ = run.steps.train(state, run.frozen, loop.model_inputs(run, None, "train", batch, state))
        return [a - b for a, b in zip(_params(new), p0, strict=True)]

    full, quarter = moved(1.0), moved(0.25)
    assert max(np.abs(d).max() for d in full) > 1e-5
    for d1, dq in zip(full, quarter, strict=True):
        np.testing.assert_allclose(dq, 0.25 * d1, atol=2e-7, rtol=1e-3)


# --------------------------------------------------------------------------- plateau + early stopping

# val loss drives ReduceLROnPlateau (factor 0.5, patience 1): reductions after epochs 4 and 7, ...
VAL_LOSS = [1.0, 0.8, 0.85, 0.9, 0.7, 0.75, 0.8, 0.81, 0.82, 0.83, 0.84, 0.85]
# val Dice drives EarlyStopping (patience 3, min_delta 0.015) and the best checkpoint: epoch 7's
# 0.51 is the best Dice but not an improvement by min_delta; Lightning stops after epoch 8.
VAL_DICE = [0.2, 0.4, 0.35, 0.38, 0.5, 0.45, 0.51, 0.49, 0.48, 0.47, 0.6, 0.7]
PATIENCE, MIN_DELTA, RESUME_AFTER = 3, 0.015, 3


def _reference_schedule():
    """Per epoch: torch's LR scale after stepping on the val loss, and whether Lightning's
    EarlyStopping asks to stop."""
    tw = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([tw], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=1)
    try:
        from lightning.pytorch.callbacks import EarlyStopping

        es = EarlyStopping(monitor="val/dice", mode="max", patience=PATIENCE, min_delta=MIN_DELTA)
        should_stop = lambda v: es._evaluate_stopping_criteria(torch.tensor(v))[0]  # noqa: E731
    except ImportError:  # Lightning's rule (callbacks/early_stopping.py), mode='max'
        state = {"best": -np.inf, "wait": 0}

        def should_stop(v):
            if v - MIN_DELTA > state["best"]:
                state["best"], state["wait"] = v, 0
            else:
                state["wait"] += 1
            return state["wait"] >= PATIENCE
    scales, stops = [], []
    for loss, dice in zip(VAL_LOSS, VAL_DICE, strict=True):
        sched.step(loss)
        scales.append(opt.param_groups[0]["lr"])
        stops.append(bool(should_stop(dice)))
    return scales, stops


def test_plateau_early_stopping_and_best_checkpoint_with_a_resume(tiny_data_dir, tmp_path, monkeypatch):
    seen = []  # params at each validation (the state the epoch ends with)

    def scripted_validate(run, cache, state, loader):
        e = len(seen)
        seen.append(_params(state))
        return {"loss": VAL_LOSS[e], "dice": VAL_DICE[e], "iou": VAL_DICE[e] / 2}

    monkeypatch.setattr(loop, "validate", scripted_validate)
    kw = dict(schedule="plateau", plateau_factor=0.5, plateau_patience=1, early_stopping_patience=PATIENCE,
              early_stopping_min_delta=MIN_DELTA, min_epochs=1)
    run1 = build_run(tiny_config(tiny_data_dir, num_epochs=RESUME_AFTER, **kw))
    _, meta1 = loop.train(run1, str(tmp_path))
    assert meta1["epoch"] == RESUME_AFTER and meta1["stop_reason"] == "max_epochs"
    run2 = build_run(tiny_config(tiny_data_dir, num_epochs=len(VAL_LOSS), **kw))
    best, meta = loop.train(run2, str(tmp_path))  # resumes from latest (epoch 3)

    scales, stops = _reference_schedule()
    stop_epoch = stops.index(True) + 1
    assert 1 < stop_epoch < len(VAL_DICE)  # the scenario does stop early
    assert meta["stop_reason"] == "early_stopping" and meta["epoch"] == stop_epoch == len(seen)
    got = [h["lr_scale"] for h in meta["history"]]
    assert [h["epoch"] for h in meta["history"]] == list(range(1, stop_epoch + 1))
    np.testing.assert_allclose(got, scales[:stop_epoch], rtol=1e-6)
    assert min(scales[:stop_epoch]) < 1.0  # the scenario reduces the LR after the resume

    best_idx = int(np.argmax(VAL_DICE[:stop_epoch]))  # first maximum, as the loop's strict '>'
    assert meta["best_epoch"] == best_idx + 1 != stop_epoch
    for a, b in zip(_params(best), seen[best_idx], strict=True):
        np.testing.assert_array_equal(a, b)
    ckpts = checkpoint.Checkpoints(str(tmp_path))
    _, best_meta, _ = ckpts.restore_best(run2.init_state)
    ckpts.close()
    assert best_meta["epoch"] == best_idx + 1


# --------------------------------------------------------------------------- validation padding


def test_validation_ignores_the_padding_of_the_last_batch(tiny_data_dir):
    run = build_run(tiny_config(tiny_data_dir, cache="off"))
    assert SIZES["val"] % 3
    padded = loop.validate(run, None, run.init_state, loop.make_loader(run, DS, "val", 3, train=False))
    exact = loop.validate(run, None, run.init_state, loop.make_loader(run, DS, "val", 1, train=False))
    for k in ("loss", "dice", "iou"):
        assert padded[k] == pytest.approx(exact[k], rel=1e-5, abs=1e-7), k


# --------------------------------------------------------------------------- feature cache


def test_cache_serves_the_features_of_each_epochs_drawn_text(tiny_data_dir):
    """Prompt ``p2`` is a list of two texts, drawn per example per epoch. The cache must hand
    back exactly what encoding the batch gives; the stand-in encoder's features are the batch's
    token ids, so a stale text shows."""
    c = tiny_config(tiny_data_dir)
    c.data.prompt = "p2"
    run = build_run(c)
    loader = loop.make_loader(run, DS, "train", 4, train=True)
    cache = FeatureCache(2**30)
    drawn: dict[int, set[str]] = {}
    it = iter(loader)
    for _ in range(6 * loader.steps_per_epoch):
        batch = next(it)
        encode = lambda b=batch: shd.put_batch({"ids": b["input_ids"].astype(np.float32)}, run.batch_sharding)
        got = cache.features("train", batch, encode, run.batch_sharding)
        np.testing.assert_array_equal(np.asarray(got["ids"]), batch["input_ids"].astype(np.float32))
        for i, p in zip(batch["index"], batch["prompt"], strict=True):
            drawn.setdefault(int(i), set()).add(str(p))
    assert any(len(v) > 1 for v in drawn.values())  # texts do change between epochs
    assert cache.stats()["hits"] > 0  # and the cache did serve batches


# --------------------------------------------------------------------------- evaluation


def _dice_iou(p: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    inter, sp, sg = np.logical_and(p, g).sum(), p.sum(), g.sum()
    if sp + sg == 0:
        return 1.0, 1.0
    return 2 * inter / (sp + sg), inter / (sp + sg - inter)


def test_evaluation_rows_match_metrics_recomputed_from_saved_masks(tiny_data_dir, tmp_path):
    c = tiny_config(tiny_data_dir)
    run = build_run(c, training=False)
    batch_size = 3
    assert SIZES["test"] % batch_size and run.contract.image_size == (32, 32)
    logits_of: dict[int, np.ndarray] = {}

    def predict(batch):  # the ground truth at model resolution, shifted: Dice well below 1
        logits = (np.roll(np.asarray(batch["mask"], np.float32), 3, axis=2) - 0.5) * 8.0
        for r in np.flatnonzero(batch["valid"]):
            logits_of[int(batch["index"][r])] = logits[r]
        return logits

    out = evaluate_lib.evaluate_loader(
        predict, loop.make_loader(run, DS, "test", batch_size, train=False), split="test",
        data_dir=tiny_data_dir, threshold=0.5, resize_mode="nearest_mask", out_dir=str(tmp_path), with_hd95=False)
    rows = out["rows"]
    assert sorted(r["index"] for r in rows) == list(range(SIZES["test"]))
    originals = pathlib.Path(tiny_data_dir).parent / "manual" / DS / "masks"
    dices = []
    for row in rows:
        gt = np.asarray(Image.open(originals / row["mask_name"]).convert("L")) > 0
        saved = np.asarray(Image.open(tmp_path / "masks" / row["mask_name"]))
        assert gt.shape == saved.shape == (40, 52)
        pred = saved > 0
        binary = torch.from_numpy((1 / (1 + np.exp(-logits_of[row["index"]])) > 0.5).astype(np.float64))
        want = torch.nn.functional.interpolate(binary[None, None], size=gt.shape, mode="nearest-exact")[0, 0]
        np.testing.assert_array_equal(pred, want.numpy() > 0)
        dice, iou = _dice_iou(pred, gt)
        assert 0.05 < dice < 0.99
        assert row["dice"] == pytest.approx(dice, abs=1e-6) and row["iou"] == pytest.approx(iou, abs=1e-6)
        dices.append(dice)
    summary = out["per_dataset"][DS]["dice"]
    assert summary["n"] == SIZES["test"]
    assert summary["mean"] == pytest.approx(np.mean(dices), abs=1e-6)
    assert summary["std"] == pytest.approx(np.std(dices, ddof=1), abs=1e-6)
