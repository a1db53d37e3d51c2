"""CRIS through the one trainer: per-group learning rates, BCE, threshold 0.35, zero-shot eval."""

from __future__ import annotations

import json

import jax
import numpy as np
from PIL import Image

from medvlsm_jax.config import load_config
from medvlsm_jax.train import loop
from medvlsm_jax.train.run import build_run


def cris_config(data_dir: str, recipe: str = "paper"):
    c = load_config(f"cris:dataset=synthetic_polyp,prompt=p1,variant=tiny,image_size=64,recipe={recipe}")
    c.data.data_dir = data_dir
    c.train.update(batch_size=4, num_epochs=1, min_epochs=1, progress=False, log_every_steps=1)
    c.eval.update(batch_size=4, hd95=False, write_masks=False)
    return c


def test_cris_paper_recipe_trains_with_two_learning_rates(tiny_data_dir, tmp_path):
    c = cris_config(tiny_data_dir)
    assert (c.train.loss, c.train.lr, c.train.lr_encoder, c.model.freeze_encoder) == ("bce", 1e-5, 1e-6, False)
    run = build_run(c)
    assert run.threshold == 0.35 and run.contract.image_size == (64, 64)
    before = {"backbone": np.asarray(run.model().backbone.visual.conv1.kernel[...]).copy(),
              "proj": np.asarray(run.model().proj.txt.kernel[...]).copy()}
    out = loop.train_and_evaluate(c, str(tmp_path))
    model = out["run"].model(out["state"])
    # Adam's first steps move each weight by about its group's learning rate.
    moved_backbone = np.abs(np.asarray(model.backbone.visual.conv1.kernel[...]) - before["backbone"]).max()
    moved_proj = np.abs(np.asarray(model.proj.txt.kernel[...]) - before["proj"]).max()
    steps = out["meta"]["step"]
    assert 0 < moved_backbone <= steps * 1e-6 * 1.01
    assert steps * 1e-6 * 1.01 < moved_proj <= steps * 1e-5 * 1.01
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["synthetic_polyp"]["dice"]["n"] == 4


def test_cris_zeroshot_evaluates_without_training(tiny_data_dir, tmp_path):
    c = cris_config(tiny_data_dir)
    c.eval.write_masks = True
    out = loop.evaluate_zeroshot(c, str(tmp_path))
    result = out["results"]["synthetic_polyp"]
    dice = result["per_dataset"]["synthetic_polyp"]["dice"]
    assert dice["n"] == len(result["rows"]) == 4 and 0.0 <= dice["mean"] <= 1.0
    assert np.mean([r["dice"] for r in result["rows"]]) == dice["mean"]
    masks = tmp_path / "zeroshot" / "synthetic_polyp" / "masks"
    for row in result["rows"]:  # saved at the original (40 x 52) size, not the model's 64 x 64
        assert np.asarray(Image.open(masks / row["mask_name"])).shape == (40, 52)
    results = json.loads((tmp_path / "zeroshot" / "results.json").read_text())
    assert results["synthetic_polyp"]["dice"]["n"] == 4


def test_cris_trains_at_352_through_the_one_size_setting(tiny_data_dir):
    """data.image_size alone sets CRIS's input and output size (no model field to keep in step)."""
    from medvlsm_jax.train import loop

    c = load_config("cris:dataset=synthetic_polyp,prompt=p1,variant=tiny,image_size=352")
    c.data.data_dir = tiny_data_dir
    c.train.update(batch_size=2, progress=False)
    run = build_run(c)
    assert run.contract.image_size == (352, 352)
    batch = next(iter(loop.make_loader(run, "synthetic_polyp", "train", 2, train=True)))
    assert batch["pixel_values"].shape == (2, 352, 352, 3) and batch["mask"].shape == (2, 352, 352)
    state = jax.tree.map(lambda x: x.copy(), run.init_state)
    state, out = run.steps.train(state, run.frozen, loop.model_inputs(run, None, "train", batch, state))
    assert np.isfinite(float(out["loss"])) and int(state.step) == 1
    logits = run.model(state)(**{k: batch[k] for k in run.contract.input_keys})
    assert logits.shape == (2, 352, 352)
