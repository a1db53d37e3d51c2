"""Optimiser recipes against torch.optim (AdamW/Adam, ReduceLROnPlateau, per-group LR)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from medvlsm_jax.train import optim

torch = pytest.importorskip("torch")


def _tcfg(**kw):
    base = dict(optimizer="adamw", lr=1e-2, lr_encoder=None, weight_decay=1e-2, grad_clip=0.0, schedule="constant",
                plateau_factor=0.1, plateau_patience=2)
    return ml_collections.ConfigDict({**base, **kw})


@pytest.mark.parametrize("name,wd,clip", [("adamw", 1e-2, 0.0), ("adam", 1e-2, 0.0), ("adamw", 0.0, 0.05)])
def test_matches_torch_optimizer(name, wd, clip):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5, 3)).astype(np.float32)
    grads = [rng.normal(size=(5, 3)).astype(np.float32) for _ in range(4)]
    params = {"decoder": {"w": jnp.asarray(w0)}}
    tx = optim.make_optimizer(_tcfg(optimizer=name, weight_decay=wd, grad_clip=clip), params, ("clip",))
    state = tx.init(params)
    tw = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)([tw], lr=1e-2, weight_decay=wd)
    for g in grads:
        updates, state = tx.update({"decoder": {"w": jnp.asarray(g)}}, state, params)
        params = optax.apply_updates(params, updates)
        tw.grad = torch.from_numpy(g.copy())
        if clip:
            torch.nn.utils.clip_grad_norm_([tw], clip)
        topt.step()
    np.testing.assert_allclose(np.asarray(params["decoder"]["w"]), tw.detach().numpy(), atol=2e-6)


def test_per_group_learning_rates():
    params = {"clip": {"w": jnp.ones(3)}, "decoder": {"w": jnp.ones(3)}}
    tx = optim.make_optimizer(_tcfg(optimizer="adam", weight_decay=0.0, lr=1e-2, lr_encoder=1e-4), params, ("clip",))
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["clip"]["w"]), -1e-4, rtol=1e-3)
    np.testing.assert_allclose(np.asarray(updates["decoder"]["w"]), -1e-2, rtol=1e-3)
    assert set(jax.tree.leaves(optim.param_groups(params, ("clip",)))) == {"encoder", "decoder"}


def test_plateau_schedule_matches_torch_reduce_lr_on_plateau():
    val_losses = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
    plateau = optim.make_plateau(_tcfg(schedule="plateau", plateau_patience=2))
    state = optim.init_schedule(plateau)
    tw = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.SGD([tw], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, mode="min", factor=0.1, patience=2)
    for v in val_losses:
        state = optim.step_schedule(plateau, state, v)
        sched.step(v)
        assert float(optim.schedule_scale(state)) == pytest.approx(topt.param_groups[0]["lr"], rel=1e-6)
    assert topt.param_groups[0]["lr"] < 0.05  # the sequence did trigger reductions
    assert optim.make_plateau(_tcfg()) is None


@pytest.mark.parametrize("name", ["adamw", "adam"])
def test_weight_decay_alone_shrinks_like_torch(name):
    """Zero gradients isolate the decay: torch AdamW scales the weights by (1 - lr * wd) per
    step; torch Adam adds wd * w to the gradient (Adam's normalised step then moves each weight
    by about lr towards 0). Without decay nothing would move."""
    w0 = np.linspace(-2.0, 2.0, 12, dtype=np.float32).reshape(4, 3) + 0.1
    params = {"decoder": {"w": jnp.asarray(w0)}}
    tx = optim.make_optimizer(_tcfg(optimizer=name, weight_decay=0.1, lr=1e-2), params, ("clip",))
    state = tx.init(params)
    tw = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)([tw], lr=1e-2, weight_decay=0.1)
    for _ in range(5):
        updates, state = tx.update({"decoder": {"w": jnp.zeros_like(params["decoder"]["w"])}}, state, params)
        params = optax.apply_updates(params, updates)
        tw.grad = torch.zeros_like(tw)
        topt.step()
    got, want = np.asarray(params["decoder"]["w"]), tw.detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.abs(w0 - want).min() > 100 * 1e-6  # decay moved every weight well past the tolerance
    if name == "adamw":
        np.testing.assert_allclose(got, w0 * (1 - 1e-2 * 0.1) ** 5, rtol=1e-6)
