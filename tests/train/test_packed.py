"""Packed runs (medvlsm_jax.train.packed): what may be packed, which encoder features are shared,
and a pack interrupted with its members at different steps resuming to the very results of the
members trained alone (a finished member masked while the other trains on)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from medvlsm_jax.train import loop, packed
from medvlsm_jax.train.run import build_run
from tests.train.conftest import tiny_config


def _cfg(data_dir, prompt, **train):
    c = tiny_config(data_dir, **train)
    c.data.prompt = prompt
    c.eval.update(hd95=False, write_masks=False)
    return c


def test_only_runs_differing_in_member_fields_pack(tiny_data_dir):
    a, b = _cfg(tiny_data_dir, "p1"), _cfg(tiny_data_dir, "p3", num_epochs=5, early_stopping_patience=3)
    packed.check_compatible([a, b])
    assert packed.pack_key(a) == packed.pack_key(b)
    lr = _cfg(tiny_data_dir, "p1", lr=0.5)
    with pytest.raises(ValueError, match="differs from member 0 in train.lr"):
        packed.check_compatible([a, lr])
    seed = _cfg(tiny_data_dir, "p1")
    seed.seed = 7
    with pytest.raises(ValueError, match="seed"):  # a seeded random encoder differs per seed
        packed.check_compatible([a, seed])
    full = _cfg(tiny_data_dir, "p1")
    full.model.freeze_encoder = False
    assert packed.pack_key(full) is None
    with pytest.raises(ValueError, match="frozen encoder"):
        packed.check_compatible([full])


def test_clipseg_features_split_into_image_and_text_leaves(tiny_data_dir):
    run = build_run(_cfg(tiny_data_dir, "p1"))
    h, w = run.contract.image_size
    raw = {"pixel_values": np.zeros((1, h, w, 3), np.float32), "input_ids": np.zeros((1, 77), np.int32),
           "attention_mask": np.ones((1, 77), np.int32)}
    treedef, groups = packed.feature_groups(run, raw)
    feats = run.steps.encode(run.init_state.params, run.frozen, run.init_state.rest, raw)
    assert jax.tree.structure(feats) == treedef
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(feats)[0]]
    assert dict(zip(names, groups)) == {"['activations'][0]": "image", "['activations'][1]": "image",
                                        "['activations'][2]": "image", "['conditional']": "text"}


def _params(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def test_interrupted_pack_resumes_to_the_runs_trained_alone(tiny_data_dir, tmp_path):
    # member A: 1 epoch, member B: 2 epochs (A is masked during B's second epoch)
    a, b = _cfg(tiny_data_dir, "p1", num_epochs=1), _cfg(tiny_data_dir, "p2", num_epochs=2)
    alone = [loop.train_and_evaluate(c, str(tmp_path / f"alone{i}")) for i, c in enumerate((a, b))]
    dirs = [str(tmp_path / "packA"), str(tmp_path / "packB")]
    # interrupted: A after 1 step, B after 3 (mid-epoch 2), checkpoints every step
    cut = [_cfg(tiny_data_dir, "p1", num_epochs=1, max_steps=1, checkpoint_every_steps=1),
           _cfg(tiny_data_dir, "p2", num_epochs=2, max_steps=3, checkpoint_every_steps=1)]
    for c in cut:
        c.eval.after_training = False
    first = packed.train_pack(cut, dirs)
    assert [o["meta"]["step"] for o in first] == [1, 3]
    outs = packed.train_pack([a, b], dirs)  # A runs alone until it is in step, B resumes at 3
    # an epoch's train loss averages the steps of the invocation that finished it (as loop.train)
    interrupted = {(0, 1), (1, 2)}
    for k, (out, ref) in enumerate(zip(outs, alone)):
        assert not out["error"]
        assert out["meta"]["step"] == ref["meta"]["step"] and out["meta"]["stop_reason"] == "max_epochs"
        for ho, hr in zip(out["meta"]["history"], ref["meta"]["history"], strict=True):
            keys = ("val_loss", "val_dice") + (("train_loss",) if (k, ho["epoch"]) not in interrupted else ())
            # The vmapped pack step sums in another order than the lone run's (parameters agree to
            # ~1e-6, checked below); Dice thresholds logits, so a near-zero logit may flip a pixel.
            tol = {"val_dice": 5e-3, "val_loss": 1e-4, "train_loss": 1e-5}
            for key in keys:
                assert ho[key] == pytest.approx(hr[key], abs=tol[key]), key
        diff = max(float(np.abs(x - y).max()) for x, y in zip(_params(out["state"]), _params(ref["state"])))
        assert diff < 1e-5
        got = out["results"]["synthetic_polyp"]["per_dataset"]["synthetic_polyp"]["dice"]["mean"]
        want = ref["results"]["synthetic_polyp"]["per_dataset"]["synthetic_polyp"]["dice"]["mean"]
        assert got == pytest.approx(want, abs=1e-4)
