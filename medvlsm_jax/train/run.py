"""A complete, immutable training/evaluation run built from a config: :func:`build_run`.

Everything before the first compilation is validated here, so a bad model, dataset, prompt or
batch size fails fast with a clear message. :func:`build_run`

1. resolves the model family's config (``model.variant`` + ``model.overrides``) and its input
   contract (:meth:`ModelSpec.resolve_contract` with the run's one override, ``data.image_size``,
   and the tokenizer of ``model.init`` when it has one);
2. builds the model (seeded init, or ``model.init`` = a converted/exported folder) and splits it
   into trainable parameters, frozen parameters and the other variables (RNG counters,
   statistics); with ``model.freeze_encoder`` the parameters under the family's
   ``encoder_prefixes`` are frozen and never differentiated: the frozen encoder runs in its own
   jitted ``encode`` (eval mode, ``stop_gradient``) and the train step differentiates ``decode``
   only;
3. jits the steps over a 1-D ``'data'`` mesh of every device (batch split, state replicated and
   donated).

The returned :class:`Run` is frozen: nothing in it is filled in later. The loop that uses it
lives in :mod:`medvlsm_jax.train.loop`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from medvlsm_jax import weights
from medvlsm_jax.data import masks as data_masks
from medvlsm_jax.data.preprocessing import make_tokenizer
from medvlsm_jax.data.prompts import validate_prompt
from medvlsm_jax.evaluation import evaluate as evaluate_lib
from medvlsm_jax.evaluation import metrics
from medvlsm_jax.models import registry
from medvlsm_jax.models.contract import InputContract
from medvlsm_jax.train import losses, optim
from medvlsm_jax.train import sharding as shd

RECIPES = ("paper", "released")
CACHE_MODES = ("auto", "off", "host", "device")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any  # trainable nnx.State
    opt_state: Any
    rest: Any  # non-parameter variables (RNG counters, batch statistics)
    schedule: Any  # plateau schedule state (or a constant scale)


@dataclasses.dataclass(frozen=True)
class Steps:
    """The run's jitted functions (all over the run's mesh).

    * ``train(state, frozen, inputs) -> (state, {"loss", "dice", "grad_norm"})`` (state donated);
    * ``eval(params, frozen, rest, inputs) -> {"loss", "dice", "iou", "logits"}`` per example;
    * ``encode(params, frozen, rest, raw_inputs) -> features`` (the frozen encoders, eval mode).

    ``inputs`` hold ``mask`` plus either ``features`` (frozen encoder) or the contract's raw
    input keys. ``fns`` holds the same three functions un-jitted (``"train"``, ``"eval"``,
    ``"encode"``), for callers that transform them further (packed runs vmap them over members).
    """

    train: Callable
    eval: Callable
    encode: Callable
    fns: dict[str, Callable] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Run:
    """A model split for training, its contract, optimiser, mesh and jitted steps."""

    config: Any
    spec: registry.ModelSpec
    model_cfg: Any
    contract: InputContract
    tokenizer: Any  # None for image-only models
    threshold: float
    encoder_frozen: bool
    graphdef_train: Any
    graphdef_eval: Any
    frozen: Any  # frozen parameters (device, replicated)
    init_state: TrainState  # initial (or ``model.init``) state, replicated
    tx: optax.GradientTransformation
    plateau: Any
    mesh: Any
    steps: Steps

    @property
    def family(self) -> str:
        return self.spec.name

    @property
    def replicated(self):
        return shd.replicated(self.mesh)

    @property
    def batch_sharding(self):
        return shd.batch_sharded(self.mesh)

    def model(self, state: TrainState | None = None) -> nnx.Module:
        """The eval-mode model holding ``state``'s parameters (default: the initial state)."""
        state = state if state is not None else self.init_state
        return nnx.merge(self.graphdef_eval, state.params, self.frozen, state.rest)


# --------------------------------------------------------------------------- configuration


def eval_datasets(config: Any) -> list[str]:
    names = [n.strip() for n in config.eval.datasets.split(",") if n.strip()] if config.eval.datasets else []
    return names or [config.data.dataset]


def validate_config(config: Any, *, training: bool = True) -> None:
    """Raises a clear error for anything wrong in ``config`` (no compilation, no data read)."""
    spec = registry.get_spec(config.model.name)
    spec.config(config.model.variant)
    tcfg = config.train
    losses.check_loss(tcfg.loss)
    for value, allowed, key in ((tcfg.optimizer, optim.OPTIMIZERS, "train.optimizer"),
                                (tcfg.schedule, optim.SCHEDULES, "train.schedule"),
                                (tcfg.cache, CACHE_MODES, "train.cache"),
                                (config.eval.resize, evaluate_lib.RESIZE_MODES, "eval.resize"),
                                (config.data.mask_target, data_masks.MASK_TARGETS, "data.mask_target")):
        if value not in allowed:
            raise ValueError(f"{key}={value!r}; choose from {', '.join(allowed)}")
    if not 0 <= config.eval.gt_threshold < 255:
        raise ValueError(f"eval.gt_threshold={config.eval.gt_threshold!r}; expected 0..254 (0: the original's > 0)")
    names = ([config.data.dataset] if training else []) + eval_datasets(config)
    validate_prompt(config.data.prompt, config.data.prompt_override, names)
    if training:
        shd.check_batch_size(tcfg.batch_size, "train.batch_size")
        if tcfg.keep_checkpoints < 2:
            raise ValueError(f"train.keep_checkpoints={tcfg.keep_checkpoints}; keep at least 2 so that a damaged "
                             "checkpoint has a fallback")
    shd.check_batch_size(config.eval.batch_size, "eval.batch_size")
    if config.model.init and not os.path.isdir(config.model.init):
        raise FileNotFoundError(f"model.init={config.model.init!r} is not a folder "
                                "(expected a converted or exported model folder)")


def model_config(config: Any) -> Any:
    """The family's config dataclass from ``model.variant`` + ``model.overrides``."""
    spec = registry.get_spec(config.model.name)
    overrides = dict(config.model.overrides.to_dict()) if config.model.overrides else {}
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    if config.train.mixed_precision and "dtype" in fields:
        overrides.setdefault("dtype", "bfloat16")
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise KeyError(f"model.overrides has keys {unknown} unknown to model {spec.name!r}")
    return spec.config(config.model.variant, **{k: tuple(v) if isinstance(v, list) else v
                                                 for k, v in overrides.items()})


def resolve_contract(config: Any, spec: registry.ModelSpec | None = None, model_cfg: Any = None) -> InputContract:
    """The run's input contract: the family's, at ``data.image_size``, with ``model.init``'s
    tokenizer when the folder has one."""
    spec = spec or registry.get_spec(config.model.name)
    model_cfg = model_cfg if model_cfg is not None else model_config(config)
    vocab = None
    if config.model.init:
        tok_dir = os.path.join(config.model.init, weights.TOKENIZER_DIR)
        vocab = tok_dir if os.path.isdir(tok_dir) else None
    return spec.resolve_contract(model_cfg, config.data.image_size or None, vocab=vocab)


# --------------------------------------------------------------------------- building


def _trainable_filter(prefixes: tuple[str, ...], freeze_encoder: bool) -> Callable[[Any, Any], bool]:
    def trainable(path: tuple[Any, ...], value: Any) -> bool:
        return isinstance(value, nnx.Param) and not (freeze_encoder and str(path[0]) in prefixes)
    return trainable


def build_run(config: Any, *, training: bool = True, tokenizer: bool = True) -> Run:
    """Validates ``config``, builds the model, optimiser, mesh and jitted steps; ``tokenizer=False``
    leaves ``Run.tokenizer`` None (callers that feed token ids themselves, e.g. the benchmarks:
    a BERT model needs no vocabulary folder then)."""
    validate_config(config, training=training)
    spec = registry.get_spec(config.model.name)
    mcfg = model_config(config)
    contract = resolve_contract(config, spec, mcfg)
    model = spec.build(mcfg, nnx.Rngs(config.seed))
    if config.model.init:
        meta = weights.read_model_json(config.model.init)
        if meta["family"] != spec.name:
            raise ValueError(f"model.init {config.model.init} holds a {meta['family']!r} model, "
                             f"not {spec.name!r}")
        weights.restore_params(config.model.init, model)
    prefixes = tuple(getattr(model, "encoder_prefixes", ()))
    frozen_enc = bool(config.model.freeze_encoder and prefixes)
    trainable = _trainable_filter(prefixes, frozen_enc)
    model.eval()
    graphdef_eval = nnx.split(model, trainable, nnx.Param, ...)[0]
    model.train()
    graphdef_train, params, frozen, rest = nnx.split(model, trainable, nnx.Param, ...)
    tx = optim.make_optimizer(config.train, params, prefixes)
    plateau = optim.make_plateau(config.train)
    mesh = shd.make_mesh()
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rest=rest,
                       schedule=optim.init_schedule(plateau))
    state, frozen = jax.device_put((state, frozen), shd.replicated(mesh))
    threshold = config.eval.threshold if config.eval.threshold >= 0 else spec.threshold
    steps = _jit_steps(config.train, contract.input_keys, graphdef_train, graphdef_eval, tx, float(threshold), mesh)
    return Run(config=config, spec=spec, model_cfg=mcfg, contract=contract,
               tokenizer=make_tokenizer(contract.text) if tokenizer and contract.text is not None else None,
               threshold=float(threshold), encoder_frozen=frozen_enc, graphdef_train=graphdef_train,
               graphdef_eval=graphdef_eval, frozen=frozen, init_state=state, tx=tx, plateau=plateau, mesh=mesh,
               steps=steps)


def _jit_steps(tcfg: Any, input_keys: tuple[str, ...], gd_train: Any, gd_eval: Any,
               tx: optax.GradientTransformation, thr: float, mesh: Any) -> Steps:
    loss_kw = dict(dice_weight=tcfg.dice_weight, bce_weight=tcfg.bce_weight)

    def forward(graphdef, params, frozen, rest, inputs):
        # copy=True: fresh Variables at this trace level, so BatchNorm statistics and dropout
        # RNG counts can be updated inside jax.value_and_grad.
        model = nnx.merge(graphdef, params, frozen, rest, copy=True)
        if "features" in inputs:
            logits = model.decode(inputs["features"])
        else:
            logits = model(**{k: inputs[k] for k in input_keys})
        return logits, nnx.state(model, nnx.Not(nnx.Param))

    def encode(params, frozen, rest, raw):
        model = nnx.merge(gd_eval, params, frozen, rest, copy=True)  # fresh Variables at this trace level
        return jax.lax.stop_gradient(model.encode(**{k: raw[k] for k in input_keys}))

    def train_step(state: TrainState, frozen, inputs):
        def loss_fn(params):
            logits, rest = forward(gd_train, params, frozen, state.rest, inputs)
            loss = losses.batch_loss(tcfg.loss, logits, inputs["mask"], inputs.get("valid"), **loss_kw)
            return loss, (rest, logits)

        (loss, (rest, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        scale = optim.schedule_scale(state.schedule)
        updates = jax.tree.map(lambda u: (u * scale).astype(u.dtype), updates)
        params = optax.apply_updates(state.params, updates)
        dice, _ = metrics.dice_iou(jax.nn.sigmoid(logits) > thr, inputs["mask"])
        dice = losses.masked_mean(dice, inputs.get("valid"))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rest=rest)
        return new_state, {"loss": loss, "dice": dice, "grad_norm": optax.global_norm(grads)}

    def eval_step(params, frozen, rest, inputs):
        logits, _ = forward(gd_eval, params, frozen, rest, inputs)
        per_loss = losses.per_example_loss(tcfg.loss, logits, inputs["mask"], **loss_kw)
        dice, iou = metrics.dice_iou(jax.nn.sigmoid(logits) > thr, inputs["mask"])
        return {"loss": per_loss, "dice": dice, "iou": iou, "logits": logits}

    rep, bat = shd.replicated(mesh), shd.batch_sharded(mesh)
    return Steps(
        train=jax.jit(train_step, in_shardings=(rep, rep, bat), out_shardings=(rep, rep), donate_argnums=0),
        eval=jax.jit(eval_step, in_shardings=(rep, rep, rep, bat), out_shardings=bat),
        encode=jax.jit(encode, in_shardings=(rep, rep, rep, bat), out_shardings=bat),
        fns={"train": train_step, "eval": eval_step, "encode": encode},
    )
