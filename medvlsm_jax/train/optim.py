"""Optimisers of the two recipes, with optax.

* ``adam`` — ``torch.optim.Adam`` (L2 ``weight_decay`` added to the gradient, as torch does);
* ``adamw`` — ``torch.optim.AdamW`` (decoupled decay ``p -= lr * wd * p``); both with torch's
  defaults ``betas=(0.9, 0.999), eps=1e-8``.
* Per-group learning rates (``lr_encoder`` for the parameters under the model's
  ``encoder_prefixes``, ``lr`` for the rest) with :func:`optax.multi_transform`.
* Gradient clipping by global norm (Lightning ``gradient_clip_val``) before the update.
* ``schedule='plateau'``: torch ``ReduceLROnPlateau(mode='min', factor, patience,
  threshold=1e-4 rel)`` stepped once per epoch on the validation loss, with
  :func:`optax.contrib.reduce_on_plateau`. Its state lives next to the optimiser state and the
  train step multiplies the updates by ``scale`` (for Adam/AdamW that equals scaling the
  learning rate, decoupled decay included). optax reduces when the bad-epoch count *reaches*
  ``patience``, torch when it *exceeds* it, so optax gets ``patience + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from optax import contrib

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "plateau")
PLATEAU_RTOL = 1e-4  # torch ReduceLROnPlateau threshold (relative mode)


def _base(name: str, lr: float, weight_decay: float) -> optax.GradientTransformation:
    if name == "adamw":
        return optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)
    if name == "adam":
        adam = optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)
        return optax.chain(optax.add_decayed_weights(weight_decay), adam) if weight_decay else adam
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def _group(path: tuple[Any, ...], encoder_prefixes: Sequence[str]) -> str:
    head = path[0]
    name = getattr(head, "key", getattr(head, "name", head))
    return "encoder" if name in encoder_prefixes else "decoder"


def param_groups(params: Any, encoder_prefixes: Sequence[str]) -> Any:
    """A pytree like ``params`` labelling each leaf 'encoder' or 'decoder'."""
    return jax.tree_util.tree_map_with_path(lambda p, _: _group(p, encoder_prefixes), params)


def make_optimizer(tcfg: Any, params: Any, encoder_prefixes: Sequence[str]) -> optax.GradientTransformation:
    """The optimiser of train config ``tcfg`` for the trainable ``params``."""
    labels = param_groups(params, encoder_prefixes)
    used = set(jax.tree.leaves(labels))
    lr_encoder = tcfg.lr_encoder if tcfg.lr_encoder is not None else tcfg.lr
    rates = {"encoder": lr_encoder, "decoder": tcfg.lr}
    if len(used) == 1 or lr_encoder == tcfg.lr:
        (group,) = used if len(used) == 1 else ("decoder",)
        tx = _base(tcfg.optimizer, rates[group], tcfg.weight_decay)
    else:
        tx = optax.multi_transform(
            {g: _base(tcfg.optimizer, rates[g], tcfg.weight_decay) for g in sorted(used)}, labels)
    if tcfg.grad_clip:
        tx = optax.chain(optax.clip_by_global_norm(tcfg.grad_clip), tx)
    return tx


def make_plateau(tcfg: Any) -> optax.GradientTransformationExtraArgs | None:
    """The epoch-level LR schedule, or None for a constant learning rate."""
    if tcfg.schedule == "constant":
        return None
    if tcfg.schedule == "plateau":
        return contrib.reduce_on_plateau(factor=tcfg.plateau_factor, patience=tcfg.plateau_patience + 1,
                                         rtol=PLATEAU_RTOL, atol=0.0, cooldown=0)
    raise ValueError(f"unknown schedule {tcfg.schedule!r}; choose from {', '.join(SCHEDULES)}")


def init_schedule(plateau: optax.GradientTransformationExtraArgs | None) -> Any:
    """Schedule state: the plateau state, or a constant scale of 1."""
    return plateau.init(jnp.zeros(())) if plateau is not None else {"scale": jnp.ones((), jnp.float32)}


def schedule_scale(schedule_state: Any) -> jax.Array:
    return schedule_state["scale"] if isinstance(schedule_state, dict) else schedule_state.scale


def step_schedule(plateau: optax.GradientTransformationExtraArgs | None, schedule_state: Any,
                  val_loss: float) -> Any:
    """One epoch of the schedule given the validation loss."""
    if plateau is None:
        return schedule_state
    _, new_state = plateau.update(jnp.zeros(()), schedule_state, value=jnp.asarray(val_loss, jnp.float32))
    return new_state
