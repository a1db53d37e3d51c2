"""Issue 15 in the trainer: validation Dice on the original's (soft) target, the last partial
batch trained, CRIS's released loss, and the new settings validated before compilation."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medvlsm_jax.config import load_config
from medvlsm_jax.train import loop, losses
from medvlsm_jax.train.run import build_run
from tests.train.conftest import SIZES, tiny_config, monai11


def test_validation_dice_scores_the_soft_target(tiny_data_dir):
    """``val/dice`` of the original: MONAI ``compute_dice(sigmoid(logits) > thr, mask)`` with
    the soft ``ToTensor`` mask, not a re-binarised one."""
    run = build_run(tiny_config(tiny_data_dir, cache="off"))
    rng = np.random.default_rng(0)
    enc = run.tokenizer(["a pink polyp"] * 4, max_length=run.contract.text.max_length)
    soft = np.where(rng.random((4, 32, 32)) > 0.5, rng.uniform(0.05, 0.45, (4, 32, 32)), 0).astype(np.float32)
    batch = {"pixel_values": rng.normal(size=(4, 32, 32, 3)).astype(np.float32),
             "input_ids": np.asarray(enc["input_ids"], np.int32),
             "attention_mask": np.asarray(enc["attention_mask"], np.int32),
             "mask": soft, "valid": np.ones(4, bool)}
    state = run.init_state
    out = run.steps.eval(state.params, run.frozen, state.rest, loop.model_inputs(run, None, "val", batch, state))
    pred = np.asarray(jax.nn.sigmoid(out["logits"])) > run.threshold
    inter, sizes = (pred * soft).sum((1, 2)), pred.sum((1, 2)) + soft.sum((1, 2))
    np.testing.assert_allclose(np.asarray(out["dice"]), np.where(sizes > 0, 2 * inter / sizes, 1), rtol=1e-5)
    assert pred.any()  # a prediction to score (else the Dice would not depend on the target's values)


def test_last_partial_batch_is_trained(tiny_data_dir, tmp_path):
    """8 training images at batch 3: 3 steps per epoch (the original's drop_last=False)."""
    config = tiny_config(tiny_data_dir, batch_size=3, num_epochs=2, cache="off")
    config.eval.after_training = False
    out = loop.train_and_evaluate(config, str(tmp_path))
    steps = math.ceil(SIZES["train"] / 3)
    assert out["meta"]["step"] == 2 * steps and [h["step"] for h in out["meta"]["history"]] == [steps, 2 * steps]
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train/loss"]) for r in logged if "train/loss" in r)


@pytest.mark.parametrize("change,match", [
    (lambda c: setattr(c.data, "mask_target", "hard"), "data.mask_target"),
    (lambda c: setattr(c.eval, "gt_threshold", 255), "eval.gt_threshold"),
])
def test_new_settings_fail_before_compilation(tiny_data_dir, monkeypatch, change, match):
    config = tiny_config(tiny_data_dir)
    change(config)
    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled before validating"))
    with pytest.raises(ValueError, match=match):
        build_run(config)


def test_cris_released_recipe_is_monai_dicece_1_02():
    """medvlsm configs/model/cris.yaml: DiceCELoss(lambda_dice=1.0, lambda_ce=0.2) on sigmoid
    outputs, single channel; the paper's text (and the paper recipe) says BCE."""
    get_config = lambda arg: load_config(f"cris:{arg}")  # noqa: E731
    released, paper = get_config("recipe=released").train, get_config("recipe=paper").train
    assert (released.loss, released.dice_weight, released.bce_weight) == ("paper_faithful", 1.0, 0.2)
    assert paper.loss == "bce" and get_config("recipe=released,loss=bce").train.loss == "bce"
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 8, 6)).astype(np.float32) * 2
    y = np.where(rng.random((3, 8, 6)) > 0.5, rng.random((3, 8, 6)), 0).astype(np.float32)  # soft target
    p = 1 / (1 + np.exp(-x.astype(np.float64)))
    dice = 1 - (2 * (p * y).sum((1, 2)) + 1e-5) / (p.sum((1, 2)) + y.sum((1, 2)) + 1e-5)
    kw = {"dice_weight": released.dice_weight, "bce_weight": released.bce_weight}
    got = losses.batch_loss(released.loss, jnp.asarray(x), jnp.asarray(y), **kw)
    assert float(got) == pytest.approx(1.0 * dice.mean() + 0.2 * 0.0, rel=1e-5)  # CE term: log_softmax of 1 channel
    monai_losses = monai11("monai.losses")
    torch = pytest.importorskip("torch")
    ref = monai_losses.DiceCELoss(lambda_dice=1.0, lambda_ce=0.2)(torch.sigmoid(torch.from_numpy(x))[:, None],
                                                                   torch.from_numpy(y)[:, None])
    assert float(got) == pytest.approx(float(ref), rel=1e-5)


@pytest.mark.parametrize("size", [(451, 488), (176, 1080), (60, 50)])
def test_evaluation_resize_is_the_originals(size):
    """``src/eval.py``: ``TF.resize(pred.double(), [h, w], NEAREST_EXACT)`` of the binarised
    prediction. 352 -> 451 / 488 are sizes where torch's float32 and float64 index arithmetic
    disagree, 60 x 50 goes through torch's small-output kernel."""
    from medvlsm_jax.evaluation import evaluate

    torch = pytest.importorskip("torch")
    TF = pytest.importorskip("torchvision.transforms.functional")
    logits = np.random.default_rng(0).normal(size=(352, 352)).astype(np.float32)
    pred = torch.from_numpy(1 / (1 + np.exp(-logits)) > 0.5)[None]
    want = TF.resize(pred.double(), list(size), interpolation=TF.InterpolationMode.NEAREST_EXACT)[0].numpy() > 0
    got = evaluate.to_original_size(logits, size, 0.5, "nearest_mask")
    np.testing.assert_array_equal(got, want)
