"""One trainer for every model: :func:`train_and_evaluate` and :func:`evaluate_run`.

Flow (everything before the first compilation is validated, so a bad model, dataset, prompt or
batch size fails fast with a clear message):

1. build the model (seeded init, or ``model.init`` = a converted/exported folder), split it into
   trainable parameters, frozen parameters and the other variables (RNG counters, statistics);
   with ``model.freeze_encoder`` the parameters under the family's ``encoder_prefixes`` are
   frozen and never differentiated: the frozen encoder runs in its own jitted ``encode`` (eval
   mode, ``stop_gradient``) and the train step differentiates ``decode`` only;
2. jit the steps over a 1-D ``'data'`` mesh of every device (batch split, state replicated and
   donated);
3. resume from ``<workdir>/checkpoints/latest`` when present (state, optimiser and schedule,
   data-iterator position, epoch/step, early-stopping counters);
4. epochs: train (progress bar with img/s and ETA; NaN/Inf loss stops the run without saving),
   validate (loss and Dice at model resolution, as the original's ``val/dice_epoch``), step the
   plateau schedule, keep the best-by-val-Dice checkpoint, early-stop, save ``latest``;
5. export the best model to ``<workdir>/export`` (the folder format of :func:`medvlsm_jax.load`)
   and evaluate it on the test split (:mod:`medvlsm_jax.evaluate`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from flax import nnx

from medvlsm_jax import evaluate as evaluate_lib
from medvlsm_jax import weights
from medvlsm_jax.data import masks as data_masks
from medvlsm_jax.data import pipeline, preprocessing, sources
from medvlsm_jax.data import registry as data_registry
from medvlsm_jax.data.errors import DataError
from medvlsm_jax.data.prompts import check_prompt, parse_prompt
from medvlsm_jax.models import registry
from medvlsm_jax.train import checkpoint as ckpt_lib
from medvlsm_jax.train import losses, metrics, optim
from medvlsm_jax.train import sharding as shd
from medvlsm_jax.train.cache import FeatureCache

log = logging.getLogger(__name__)

IMAGE_KEYS = ("pixel_values", "input_ids", "attention_mask")
RECIPES = ("paper", "released")
CACHE_MODES = ("auto", "off", "host", "device")
EVAL_RESIZE = evaluate_lib.RESIZE_MODES
MASK_TARGETS = data_masks.MASK_TARGETS


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/Inf loss; the run stopped without saving."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any  # trainable nnx.State
    opt_state: Any
    rest: Any  # non-parameter variables (RNG counters, batch statistics)
    schedule: Any  # plateau schedule state (or a constant scale)


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
                                (config.eval.resize, EVAL_RESIZE, "eval.resize"),
                                (config.data.mask_target, MASK_TARGETS, "data.mask_target")):
        if value not in allowed:
            raise ValueError(f"{key}={value!r}; choose from {', '.join(allowed)}")
    if not 0 <= config.eval.gt_threshold < 255:
        raise ValueError(f"eval.gt_threshold={config.eval.gt_threshold!r}; expected 0..254 (0: the original's > 0)")
    choice = parse_prompt(config.data.prompt, config.data.prompt_override)
    names = ([config.data.dataset] if training else []) + eval_datasets(config)
    for name in names:
        for member in data_registry.members(name):
            check_prompt(choice, member, data_registry.get_spec(member).prompt_keys)
    if training:
        shd.check_batch_size(tcfg.batch_size, "train.batch_size")
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


# --------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Run:
    """A model split for training, its jitted steps and its mesh."""

    config: Any
    family: str
    model_cfg: Any
    graphdef_train: Any
    graphdef_eval: Any
    frozen: Any
    state: TrainState
    tx: optax.GradientTransformation
    plateau: Any
    mesh: Any
    encoder_frozen: bool
    threshold: float
    prep: preprocessing.PreprocessSpec
    tokenizer: Any
    cache: FeatureCache | None = None
    train_step: Callable = None
    eval_step: Callable = None
    encode: Callable = None

    @property
    def replicated(self):
        return shd.replicated(self.mesh)

    @property
    def batch_sharding(self):
        return shd.batch_sharded(self.mesh)

    def model(self, state: TrainState | None = None) -> nnx.Module:
        state = state or self.state
        return nnx.merge(self.graphdef_eval, state.params, self.frozen, state.rest)


def _trainable_filter(prefixes: tuple[str, ...], freeze_encoder: bool) -> Callable[[Any, Any], bool]:
    def trainable(path: tuple[Any, ...], value: Any) -> bool:
        return isinstance(value, nnx.Param) and not (freeze_encoder and str(path[0]) in prefixes)
    return trainable


def build_run(config: Any, *, training: bool = True) -> Run:
    """Validates ``config``, builds the model, optimiser, mesh and jitted steps."""
    validate_config(config, training=training)
    spec = registry.get_spec(config.model.name)
    mcfg = model_config(config)
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
    rep = shd.replicated(mesh)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rest=rest,
                       schedule=optim.init_schedule(plateau))
    state, frozen = jax.device_put((state, frozen), rep)
    threshold = config.eval.threshold if config.eval.threshold >= 0 else spec.threshold
    prep = spec.preprocessing_for(mcfg, config.data.image_size)
    run = Run(config, spec.name, mcfg, graphdef_train, graphdef_eval, frozen, state, tx, plateau, mesh,
              frozen_enc, float(threshold), prep, preprocessing.make_tokenizer(prep.text) if prep.text else None)
    _compile_steps(run)
    cache_mode = config.train.cache
    if frozen_enc and cache_mode != "off":
        run.cache = FeatureCache(int(config.train.cache_max_gb * 2**30), on_device=cache_mode == "device")
    elif cache_mode in ("host", "device"):
        log.warning("train.cache=%s ignored: the encoder is trained", cache_mode)
    return run


def _compile_steps(run: Run) -> None:
    tcfg = run.config.train
    gd_train, gd_eval, tx, thr = run.graphdef_train, run.graphdef_eval, run.tx, run.threshold
    loss_kw = dict(dice_weight=tcfg.dice_weight, bce_weight=tcfg.bce_weight)

    def forward(graphdef, params, frozen, rest, inputs):
        # copy=True: fresh Variables at this trace level, so BatchNorm statistics and dropout
        # RNG counts can be updated inside jax.value_and_grad.
        model = nnx.merge(graphdef, params, frozen, rest, copy=True)
        if "features" in inputs:
            logits = model.decode(inputs["features"])
        else:
            logits = model(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
        return logits, nnx.state(model, nnx.Not(nnx.Param))

    def encode(params, frozen, rest, batch):
        model = nnx.merge(gd_eval, params, frozen, rest)
        return jax.lax.stop_gradient(model.encode(batch["pixel_values"], batch["input_ids"],
                                                  batch["attention_mask"]))

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

    rep, bat = run.replicated, run.batch_sharding
    run.train_step = jax.jit(train_step, in_shardings=(rep, rep, bat), out_shardings=(rep, rep),
                             donate_argnums=0)
    run.eval_step = jax.jit(eval_step, in_shardings=(rep, rep, rep, bat), out_shardings=bat)
    run.encode = jax.jit(encode, in_shardings=(rep, rep, rep, bat), out_shardings=bat)


def model_inputs(run: Run, split: str, batch: dict[str, np.ndarray], state: TrainState) -> dict[str, Any]:
    """Device inputs of a host batch: the mask plus features (frozen encoder) or raw inputs."""
    bat = run.batch_sharding
    inputs = shd.put_batch({"mask": batch["mask"], **({"valid": batch["valid"]} if "valid" in batch else {})}, bat)
    raw = lambda: shd.put_batch({k: batch[k] for k in IMAGE_KEYS}, bat)
    if not run.encoder_frozen:
        return {**inputs, **raw()}
    encode = lambda: run.encode(state.params, run.frozen, state.rest, raw())
    inputs["features"] = run.cache.features(split, batch, encode, bat) if run.cache is not None else encode()
    return inputs


def _global_sum(x: np.ndarray) -> np.ndarray:
    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x)).sum(0)


def validate(run: Run, state: TrainState, loader: pipeline.Loader) -> dict[str, float]:
    """Mean loss, Dice and IoU over the valid examples (model resolution)."""
    sums = np.zeros(4)
    for batch in loader:
        out = run.eval_step(state.params, run.frozen, state.rest, model_inputs(run, "val", batch, state))
        valid = np.asarray(batch["valid"], np.float64)
        sums += [valid.sum()] + [float((shd.local_rows(out[k]) * valid).sum()) for k in ("loss", "dice", "iou")]
    n, loss, dice, iou = _global_sum(sums)
    n = max(n, 1.0)
    return {"loss": float(loss / n), "dice": float(dice / n), "iou": float(iou / n)}


def predictor(run: Run, state: TrainState) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """Host batch -> this process's logits (B, H, W) at model resolution."""
    def predict(batch):
        out = run.eval_step(state.params, run.frozen, state.rest, model_inputs(run, "test", batch, state))
        return shd.local_rows(out["logits"])
    return predict


# --------------------------------------------------------------------------- logging


class MetricWriter:
    """``metrics.jsonl`` always; TensorBoard event files when ``tensorboardX`` is installed."""

    def __init__(self, workdir: str, enabled: bool):
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            log.info("tensorboardX is not installed: metrics go to metrics.jsonl only")
        else:
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            if self._tb is not None:
                self._tb.close()


# --------------------------------------------------------------------------- training


def _loader(run: Run, dataset: str, split: str, batch_size: int, *, train: bool) -> pipeline.Loader:
    c = run.config
    return pipeline.make_loader(
        dataset, split, registry.get_spec(run.family).preprocessing, c.data.prompt, batch_size // jax.process_count(),
        seed=c.seed, image_size=run.prep.image_size, tokenizer=run.tokenizer,
        data_dir=c.data.data_dir or None, num_epochs=None if train else 1,
        worker_count=c.data.worker_count, shard_index=jax.process_index(), shard_count=jax.process_count(),
        prompt_override=c.data.prompt_override, mask_target=c.data.mask_target)


def _initial_meta() -> dict[str, Any]:
    return {"epoch": 0, "step": 0, "best_dice": -1.0, "best_epoch": 0, "es_best": -1.0, "bad_epochs": 0,
            "history": [], "done": False, "stop_reason": ""}


def _should_stop(tcfg: Any, meta: dict[str, Any]) -> str:
    if meta["epoch"] >= tcfg.num_epochs:
        return "max_epochs"
    if meta["bad_epochs"] >= tcfg.early_stopping_patience and meta["epoch"] >= tcfg.min_epochs:
        return "early_stopping"
    if tcfg.max_steps and meta["step"] >= tcfg.max_steps:
        return "max_steps"
    return ""


def _end_of_epoch(run: Run, state: TrainState, meta: dict, val: dict, train_loss: float,
                  seconds: float) -> tuple[TrainState, bool]:
    """Schedule, early-stopping and history bookkeeping; returns (state, improved)."""
    tcfg = run.config.train
    state = state.replace(schedule=optim.step_schedule(run.plateau, state.schedule, val["loss"]))
    meta["epoch"] += 1
    improved = val["dice"] > meta["best_dice"]
    if improved:
        meta["best_dice"], meta["best_epoch"] = val["dice"], meta["epoch"]
    if val["dice"] - tcfg.early_stopping_min_delta > meta["es_best"]:  # Lightning EarlyStopping
        meta["es_best"], meta["bad_epochs"] = val["dice"], 0
    else:
        meta["bad_epochs"] += 1
    meta["history"].append({"epoch": meta["epoch"], "step": meta["step"], "train_loss": train_loss,
                            "val_loss": val["loss"], "val_dice": val["dice"], "val_iou": val["iou"],
                            "lr_scale": float(optim.schedule_scale(state.schedule)), "seconds": seconds})
    return state, improved


def train(run: Run, workdir: str) -> tuple[TrainState, dict[str, Any]]:
    """Trains (or resumes) until max epochs, early stopping or ``train.max_steps``."""
    c, tcfg = run.config, run.config.train
    lead = jax.process_index() == 0
    ckpts = ckpt_lib.Checkpoints(workdir)
    writer = MetricWriter(workdir, lead)
    train_loader = _loader(run, c.data.dataset, "train", tcfg.batch_size, train=True)
    steps_per_epoch = train_loader.steps_per_epoch
    if steps_per_epoch == 0:
        raise ValueError(f"{c.data.dataset}/train has {train_loader.num_examples} examples per process, "
                         f"fewer than one batch of {tcfg.batch_size}")
    data_iter = iter(train_loader)
    state, meta = run.state, _initial_meta()
    restored = ckpts.restore_latest(state, run.replicated)
    if restored is not None:
        state, meta, data_state = restored
        data_iter.set_state(data_state)
        log.info("resumed from %s at epoch %d, step %d", ckpts.latest.directory, meta["epoch"], meta["step"])
    run.state = None  # donated below

    def save_latest():
        ckpts.save_latest(meta["step"], state, meta, data_iter.get_state())

    try:
        while not meta["done"]:
            reason = _should_stop(tcfg, meta)
            if reason:  # recomputed from meta on a rerun, so nothing to save
                meta["done"], meta["stop_reason"] = True, reason
                break
            start, epoch_loss, seen = time.time(), 0.0, 0
            first = meta["step"] - meta["epoch"] * steps_per_epoch
            bar = tqdm.tqdm(total=(steps_per_epoch - first) * tcfg.batch_size, unit="img", unit_scale=True,
                            desc=f"epoch {meta['epoch'] + 1}", disable=not (lead and tcfg.progress), leave=False)
            for _ in range(first, steps_per_epoch):
                batch = next(data_iter)
                state, out = run.train_step(state, run.frozen, model_inputs(run, "train", batch, state))
                loss = float(out["loss"])  # waits for the step
                if not math.isfinite(loss):
                    raise NonFiniteLossError(
                        f"loss is {loss} at step {meta['step'] + 1} (epoch {meta['epoch'] + 1}); stopping. "
                        f"The last good checkpoint (step {ckpts.latest.latest_step()}) in "
                        f"{ckpts.latest.directory} is left intact")
                meta["step"] += 1
                epoch_loss, seen = epoch_loss + loss, seen + 1
                bar.update(tcfg.batch_size)
                bar.set_postfix(loss=f"{loss:.4f}")
                if meta["step"] % tcfg.log_every_steps == 0:
                    writer.write(meta["step"], {"train/loss": loss, "train/dice": float(out["dice"]),
                                                "train/grad_norm": float(out["grad_norm"])})
                if tcfg.max_steps and meta["step"] >= tcfg.max_steps:
                    break
                epoch_end = meta["step"] % steps_per_epoch == 0  # saved after validation instead
                if tcfg.checkpoint_every_steps and meta["step"] % tcfg.checkpoint_every_steps == 0 and not epoch_end:
                    save_latest()
            bar.close()
            if meta["step"] - meta["epoch"] * steps_per_epoch < steps_per_epoch:
                continue  # stopped mid-epoch by max_steps
            val = validate(run, state, _loader(run, c.data.dataset, "val", c.eval.batch_size, train=False))
            state, improved = _end_of_epoch(run, state, meta, val, epoch_loss / max(seen, 1), time.time() - start)
            h = meta["history"][-1]
            writer.write(meta["step"], {"val/loss": h["val_loss"], "val/dice": h["val_dice"],
                                        "val/iou": h["val_iou"], "train/epoch_loss": h["train_loss"],
                                        "lr_scale": h["lr_scale"]})
            cache_note = f", cache {run.cache.stats()}" if run.cache is not None else ""
            log.info("epoch %d: train loss %.4f, val loss %.4f, val dice %.4f%s (%.1fs)%s", meta["epoch"],
                         h["train_loss"], h["val_loss"], h["val_dice"], " *best*" if improved else "",
                         h["seconds"], cache_note)
            if improved:
                ckpts.save_best(meta["step"], state, meta, data_iter.get_state())
            save_latest()
    finally:
        writer.close()
    best = ckpts.restore_best(state, run.replicated)
    ckpts.close()
    return (best[0] if best is not None else state), meta


def export(run: Run, state: TrainState, dst: str, extra: dict[str, Any] | None = None) -> str:
    """Writes ``state``'s model in the :func:`medvlsm_jax.load` folder format."""
    model = run.model(state)
    spec = registry.get_spec(run.family)
    info = {"threshold": run.threshold, "image_size": list(run.prep.image_size), **(extra or {})}
    weights.save_model(dst, run.family, dataclasses.asdict(run.model_cfg), model, info)
    if run.tokenizer is not None and spec.tokenizer == "clip":
        run.tokenizer.save(os.path.join(dst, weights.TOKENIZER_DIR))
    return dst


def run_evaluation(run: Run, state: TrainState, out_dir: str) -> dict[str, Any]:
    """Evaluates ``state`` on the test split of every ``eval.datasets`` entry."""
    c = run.config
    results = {}
    for name in eval_datasets(c):
        loader = _loader(run, name, "test", c.eval.batch_size, train=False)
        results[name] = evaluate_lib.evaluate_loader(
            predictor(run, state), loader, split="test", data_dir=c.data.data_dir or None,
            threshold=run.threshold, resize_mode=c.eval.resize, gt_threshold=c.eval.gt_threshold,
            out_dir=os.path.join(out_dir, name), write_masks=c.eval.write_masks, with_hd95=c.eval.hd95,
            overlays=c.eval.overlays, progress=c.train.progress)
    if jax.process_index() == 0:
        evaluate_lib.write_summary(results, out_dir)
    return results


def ensure_synthetic(config: Any) -> None:
    """Builds the synthetic sets the config uses when they are not built yet (they are generated
    locally; real datasets must be built with ``medvlsm-data build``)."""
    names = {m for n in [config.data.dataset, *eval_datasets(config)] for m in data_registry.members(n)}
    for name in sorted(names):
        if data_registry.get_spec(name).synthetic:
            try:
                sources.load_builder(name, config.data.data_dir or None)
            except DataError:
                log.info("building the synthetic dataset %s", name)
                sources.build_dataset(name, data_dir=config.data.data_dir or None)


def train_and_evaluate(config: Any, workdir: str) -> dict[str, Any]:
    """Finetunes per ``config`` in ``workdir`` (resuming), exports the best model, tests it."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    run = build_run(config)
    ensure_synthetic(config)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    state, meta = train(run, workdir)
    export_dir = os.path.join(workdir, "export")
    if jax.process_index() == 0:
        export(run, state, export_dir, {"dataset": config.data.dataset, "prompt": config.data.prompt,
                                        "best_epoch": meta["best_epoch"], "best_val_dice": meta["best_dice"]})
    results = run_evaluation(run, state, os.path.join(workdir, "eval")) if config.eval.after_training else {}
    return {"meta": meta, "export": export_dir, "results": results, "state": state, "run": run}


def evaluate_run(config: Any, workdir: str, *, zeroshot: bool = False) -> dict[str, Any]:
    """``eval``: tests the best (else latest) checkpoint of ``workdir``; ``zeroshot``: tests the
    ``model.init`` weights without training. Results go to ``<workdir>/eval`` / ``zeroshot``."""
    workdir = os.path.abspath(workdir)
    run = build_run(config, training=False)
    ensure_synthetic(config)
    state = run.state
    if not zeroshot:
        ckpts = ckpt_lib.Checkpoints(workdir)
        restored = ckpts.restore_best(state, run.replicated) or ckpts.restore_latest(state, run.replicated)
        ckpts.close()
        if restored is None:
            raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints; train first or use --mode=zeroshot")
        state = restored[0]
    elif not config.model.init:
        log.warning("zeroshot with a randomly initialised model: set model.init to a converted folder")
    results = run_evaluation(run, state, os.path.join(workdir, "zeroshot" if zeroshot else "eval"))
    return {"results": results, "state": state, "run": run}
