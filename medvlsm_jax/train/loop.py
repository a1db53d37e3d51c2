"""What a run does: train (resuming), early-stop, export, and evaluate the test split.

Entry points (one per ``--mode`` of :mod:`medvlsm_jax.main`):

* :func:`train_and_evaluate` — finetune per the config in ``workdir``, export the best model,
  test it;
* :func:`evaluate_checkpoint` — test the best (else latest) checkpoint of ``workdir``;
* :func:`evaluate_zeroshot` — test ``model.init`` (converted pretrained weights) untrained.

Training loop (:func:`train`):

1. resume from the newest restorable checkpoint (``latest`` or ``best``, falling back past
   damaged ones, see :mod:`medvlsm_jax.train.checkpoint`): state, optimiser and schedule,
   data-iterator position, epoch/step, early-stopping counters;
2. epochs: train (progress bar with img/s and ETA; NaN/Inf loss stops the run without saving),
   validate (loss and Dice at model resolution, as the original's ``val/dice_epoch``), step the
   plateau schedule, keep the best-by-val-Dice checkpoint, early-stop, save ``latest``;
3. export the best model to ``<workdir>/export`` (the folder format of :func:`medvlsm_jax.load`)
   and evaluate it on the test split (:mod:`medvlsm_jax.evaluation.evaluate`).

The run itself (model, contract, optimiser, jitted steps) is built by
:func:`medvlsm_jax.train.run.build_run`. The workdir's lock, config record and ``fresh`` start
are :mod:`medvlsm_jax.train.workdir`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
import tqdm

from medvlsm_jax import weights
from medvlsm_jax.data import pipeline, sources
from medvlsm_jax.data import registry as data_registry
from medvlsm_jax.data.errors import DataError
from medvlsm_jax.evaluation import evaluate as evaluate_lib
from medvlsm_jax.models import registry
from medvlsm_jax.train import checkpoint as ckpt_lib
from medvlsm_jax.train import compile_cache
from medvlsm_jax.train import distributed
from medvlsm_jax.train import optim
from medvlsm_jax.train import sharding as shd
from medvlsm_jax.train import workdir as workdir_lib
from medvlsm_jax.train.cache import FeatureCache
from medvlsm_jax.train.run import Run, TrainState, build_run, eval_datasets
from medvlsm_jax.train.writer import MetricWriter

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/Inf loss; the run stopped without saving."""


# --------------------------------------------------------------------------- inputs


def make_cache(run: Run) -> FeatureCache | None:
    """The frozen-encoder feature cache of ``run`` (``None`` when the encoder trains or the
    cache is off)."""
    mode = run.config.train.cache
    if run.encoder_frozen and mode != "off":
        return FeatureCache(int(run.config.train.cache_max_gb * 2**30), on_device=mode == "device")
    if mode in ("host", "device"):
        log.warning("train.cache=%s ignored: the encoder is trained", mode)
    return None


def model_inputs(run: Run, cache: FeatureCache | None, split: str, batch: dict[str, np.ndarray],
                 state: TrainState) -> dict[str, Any]:
    """Device inputs of a host batch: the mask plus features (frozen encoder) or the contract's
    raw inputs."""
    bat = run.batch_sharding
    inputs = shd.put_batch({"mask": batch["mask"], **({"valid": batch["valid"]} if "valid" in batch else {})}, bat)
    raw = lambda: shd.put_batch({k: batch[k] for k in run.contract.input_keys}, bat)
    if not run.encoder_frozen:
        return {**inputs, **raw()}
    encode = lambda: run.steps.encode(state.params, run.frozen, state.rest, raw())
    inputs["features"] = cache.features(split, batch, encode, bat) if cache is not None else encode()
    return inputs


def make_loader(run: Run, dataset: str, split: str, batch_size: int, *, train: bool,
                repeat: bool = False) -> pipeline.Loader:
    """This process's rows of every global batch of ``batch_size`` (see :mod:`medvlsm_jax.data.pipeline`).
    ``train``: shuffled, endless; else one pass in order (``repeat``: the same pass endlessly, read
    ``steps_per_epoch`` batches at a time, so its worker processes start once)."""
    c = run.config
    block, blocks = shd.process_block(run.mesh)
    return pipeline.make_loader(
        dataset, split, run.contract, c.data.prompt, batch_size // blocks,
        seed=c.seed, tokenizer=run.tokenizer, data_dir=c.data.data_dir or None,
        num_epochs=None if train or repeat else 1, worker_count=c.data.worker_count, shard_index=block,
        shard_count=blocks, prompt_override=c.data.prompt_override, mask_target=c.data.mask_target)


def _global_sum(x: np.ndarray) -> np.ndarray:
    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x)).sum(0)


def validate(run: Run, cache: FeatureCache | None, state: TrainState, loader: pipeline.Loader) -> dict[str, float]:
    """Mean loss, Dice and IoU over the valid examples (model resolution)."""
    sums = np.zeros(4)
    for batch in loader:
        out = run.steps.eval(state.params, run.frozen, state.rest, model_inputs(run, cache, "val", batch, state))
        valid = np.asarray(batch["valid"], np.float64)
        sums += [valid.sum()] + [float((shd.local_rows(out[k]) * valid).sum()) for k in ("loss", "dice", "iou")]
    n, loss, dice, iou = _global_sum(sums)
    n = max(n, 1.0)
    return {"loss": float(loss / n), "dice": float(dice / n), "iou": float(iou / n)}


def predictor(run: Run, state: TrainState, cache: FeatureCache | None = None
              ) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """Host batch -> this process's logits (B, H, W) at model resolution."""
    def predict(batch):
        out = run.steps.eval(state.params, run.frozen, state.rest, model_inputs(run, cache, "test", batch, state))
        return shd.local_rows(out["logits"])
    return predict


# --------------------------------------------------------------------------- training


def _initial_meta() -> dict[str, Any]:
    return {"epoch": 0, "step": 0, "best_dice": -1.0, "best_epoch": 0, "es_best": -1.0, "bad_epochs": 0,
            "history": [], "done": False, "stop_reason": "", "processes": jax.process_count()}


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


def resume(ckpts: ckpt_lib.Checkpoints, template: TrainState, sharding: Any) -> ckpt_lib.Restored | None:
    """The newest restorable checkpoint (None for a new run), with its best-model bookkeeping
    made consistent: when the best checkpoint recorded in its meta is gone or damaged, the best
    is chosen again from the epochs still to run (with a warning)."""
    restored = ckpts.restore(template, sharding)
    if restored is None:
        return None
    meta = restored.meta
    log.info("resumed from %s at epoch %d, step %d", restored.path, meta["epoch"], meta["step"])
    if meta.get("best_epoch", 0) > 0 and restored.kind != "best":
        steps = ckpts.best.all_steps()
        problem = "it is missing" if not steps else None
        if steps:
            step = max(steps)
            problem = (f"it is from step {step}, after step {meta['step']}" if step > meta["step"]
                       else ckpts.check("best", step, template, sharding))
            if problem is not None:
                ckpts.set_aside("best", step)
        if problem is not None:
            log.warning("the best checkpoint (epoch %d) cannot be used (%s); the best model is chosen again "
                        "from the epochs still to run", meta["best_epoch"], problem)
            meta["best_dice"], meta["best_epoch"] = -1.0, 0
    return restored


def train(run: Run, workdir: str, cache: FeatureCache | None = None,
          before_training: Callable[[], None] | None = None) -> tuple[TrainState, dict[str, Any]]:
    """Trains (or resumes) until max epochs, early stopping or ``train.max_steps``; returns the
    best state (by validation Dice) and the run's bookkeeping. ``before_training`` is called
    once the state is restored (or initialised), before anything is written."""
    c, tcfg = run.config, run.config.train
    lead = jax.process_index() == 0
    ckpts = ckpt_lib.Checkpoints(workdir, keep=tcfg.keep_checkpoints)
    train_loader = make_loader(run, c.data.dataset, "train", tcfg.batch_size, train=True)
    steps_per_epoch = train_loader.steps_per_epoch
    if steps_per_epoch == 0:
        raise ValueError(f"{c.data.dataset}/train has fewer examples than one batch of {tcfg.batch_size}")
    data_iter = iter(train_loader)
    # one validation iterator for the whole run: grain's worker processes start once, not per epoch
    val_loader = make_loader(run, c.data.dataset, "val", c.eval.batch_size, train=False, repeat=True)
    val_iter = iter(val_loader)
    # The initial state is copied: the train step donates its input buffers.
    state, meta = jax.tree.map(lambda x: x.copy(), run.init_state), _initial_meta()
    try:
        restored = resume(ckpts, state, run.replicated)
        if restored is not None:
            state, meta, data_state = restored
            if meta.setdefault("processes", jax.process_count()) != jax.process_count():
                raise ValueError(f"{ckpts.root} was written by {meta['processes']} processes; resume it with "
                                 f"{meta['processes']} (its data-iterator position is per process)")
            data_iter.set_state(data_state)
        if before_training is not None:
            before_training()
    except BaseException:
        ckpts.close()
        raise
    writer = MetricWriter(workdir, lead, resume_step=meta["step"])

    def save_latest():
        data_state = data_iter.get_state()  # process 0's is saved: every process's must be the same
        distributed.check_same_on_all_processes([meta["step"], data_state], "the data-iterator position")
        ckpts.save_latest(meta["step"], state, meta, data_state)

    try:
        while not meta["done"]:
            reason = _should_stop(tcfg, meta)
            if reason:  # recomputed from meta on a rerun, so nothing to save
                meta["done"], meta["stop_reason"] = True, reason
                break
            compiles = compile_cache.counters()
            first = meta["step"] - meta["epoch"] * steps_per_epoch
            # a resumed epoch's loss sums on from the checkpoint, so its mean is the whole epoch's
            start, epoch_loss, seen = time.time(), meta.get("epoch_loss_sum", 0.0), meta.get("epoch_steps", 0)
            bar = tqdm.tqdm(total=(steps_per_epoch - first) * tcfg.batch_size, unit="img", unit_scale=True,
                            desc=f"epoch {meta['epoch'] + 1}", disable=not (lead and tcfg.progress), leave=False)
            pending = []  # (step, device outputs) not yet read back: see train.sync_every

            def flush():
                """Reads the pending steps' outputs back (one transfer), checks the losses."""
                nonlocal epoch_loss, seen
                if not pending:
                    return
                outs = jax.device_get([o for _, o in pending])
                for (step, _), out in zip(pending, outs):
                    loss = float(out["loss"])
                    if not math.isfinite(loss):
                        raise NonFiniteLossError(
                            f"loss is {loss} at step {step} (epoch {meta['epoch'] + 1}); stopping. "
                            f"The last good checkpoint (step {ckpts.latest.latest_step()}) in "
                            f"{ckpts.latest.directory} is left intact")
                    epoch_loss, seen = epoch_loss + loss, seen + 1
                    meta["epoch_loss_sum"], meta["epoch_steps"] = epoch_loss, seen
                    if step % tcfg.log_every_steps == 0:
                        writer.write(step, {"train/loss": loss, "train/dice": float(out["dice"]),
                                            "train/grad_norm": float(out["grad_norm"])})
                bar.update(tcfg.batch_size * len(pending))
                bar.set_postfix(loss=f"{loss:.4f}")
                pending.clear()

            sync_every = tcfg.get("sync_every", 1)
            for _ in range(first, steps_per_epoch):
                batch = next(data_iter)
                state, out = run.steps.train(state, run.frozen, model_inputs(run, cache, "train", batch, state))
                meta["step"] += 1
                pending.append((meta["step"], out))
                if sync_every and len(pending) >= sync_every:
                    flush()  # waits for the step
                if tcfg.max_steps and meta["step"] >= tcfg.max_steps:
                    break
                epoch_end = meta["step"] % steps_per_epoch == 0  # saved after validation instead
                if tcfg.checkpoint_every_steps and meta["step"] % tcfg.checkpoint_every_steps == 0 and not epoch_end:
                    flush()  # never save a state past a non-finite loss
                    save_latest()
            flush()
            bar.close()
            if meta["step"] - meta["epoch"] * steps_per_epoch < steps_per_epoch:
                continue  # stopped mid-epoch by max_steps
            val = validate(run, cache, state, itertools.islice(val_iter, val_loader.steps_per_epoch))
            state, improved = _end_of_epoch(run, state, meta, val, epoch_loss / max(seen, 1), time.time() - start)
            meta["epoch_loss_sum"], meta["epoch_steps"] = 0.0, 0
            h = meta["history"][-1]
            h["compile_s"] = compile_cache.since(compiles)["seconds"]  # of h["seconds"]: building executables
            writer.write(meta["step"], {"val/loss": h["val_loss"], "val/dice": h["val_dice"],
                                        "val/iou": h["val_iou"], "train/epoch_loss": h["train_loss"],
                                        "lr_scale": h["lr_scale"]})
            cache_note = f", cache {cache.stats()}" if cache is not None else ""
            log.info("epoch %d: train loss %.4f, val loss %.4f, val dice %.4f%s (%.1fs)%s", meta["epoch"],
                     h["train_loss"], h["val_loss"], h["val_dice"], " *best*" if improved else "",
                     h["seconds"], cache_note)
            if improved:
                ckpts.save_best(meta["step"], state, meta, data_iter.get_state())
            save_latest()
    finally:
        writer.close()
    try:
        best = ckpts.restore_best(state, run.replicated)
    finally:
        ckpts.close()
    return (best[0] if best is not None else state), meta


def export(run: Run, state: TrainState, dst: str, extra: dict[str, Any] | None = None) -> str:
    """Writes ``state``'s model in the :func:`medvlsm_jax.load` folder format; ``model.json``
    records the resolved input contract (its vocabulary is the folder's ``tokenizer/``)."""
    contract = run.contract
    if contract.text is not None:
        contract = dataclasses.replace(contract, text=dataclasses.replace(contract.text, vocab=None))
    info = {"threshold": run.threshold, "contract": contract.to_dict(), **(extra or {})}
    weights.save_model(dst, run.family, dataclasses.asdict(run.model_cfg), run.model(state), info)
    if run.tokenizer is not None:
        run.tokenizer.save(os.path.join(dst, weights.TOKENIZER_DIR))
    return dst


def evaluate_test(run: Run, state: TrainState, out_dir: str, cache: FeatureCache | None = None) -> dict[str, Any]:
    """Scores ``state`` on the test split of every ``eval.datasets`` entry at original size."""
    c = run.config
    results = {}
    for name in eval_datasets(c):
        loader = make_loader(run, name, "test", c.eval.batch_size, train=False)
        results[name] = evaluate_lib.evaluate_loader(
            predictor(run, state, cache), loader, split="test", data_dir=c.data.data_dir or None,
            threshold=run.threshold, resize_mode=c.eval.resize, gt_threshold=c.eval.gt_threshold,
            out_dir=os.path.join(out_dir, name), write_masks=c.eval.write_masks, with_hd95=c.eval.hd95,
            overlays=c.eval.overlays if jax.process_index() == 0 else 0,
            progress=c.train.progress and jax.process_index() == 0)
    if jax.process_index() == 0:
        evaluate_lib.write_summary(results, out_dir)
    return results


def ensure_synthetic(config: Any) -> None:
    """Builds the synthetic sets the config uses when they are not built yet (they are generated
    locally; real datasets must be built with ``medvlsm-data build``)."""
    names = {m for n in [config.data.dataset, *eval_datasets(config)] for m in data_registry.members(n)}
    for name in sorted(names) if jax.process_index() == 0 else ():  # the others wait at the barrier
        if data_registry.get_spec(name).synthetic:
            try:
                sources.load_builder(name, config.data.data_dir or None)
            except DataError:
                log.info("building the synthetic dataset %s in %s (generated locally, nothing is downloaded; "
                         "data.data_dir or $MEDVLSM_DATA_DIR choose the folder)", name,
                         sources.resolve_data_dir(config.data.data_dir or None))
                sources.build_dataset(name, data_dir=config.data.data_dir or None)
    distributed.barrier("medvlsm-synthetic-data")


# --------------------------------------------------------------------------- modes


@contextlib.contextmanager
def _locked(workdir: str) -> Iterator[None]:
    """The workdir's lock, held by the lead process for the whole run."""
    if jax.process_index() != 0:
        yield
        return
    with workdir_lib.WorkdirLock(workdir):
        yield


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def train_and_evaluate(config: Any, workdir: str, *, fresh: bool = False,
                       allow_config_change: bool = False) -> dict[str, Any]:
    """Finetunes per ``config`` in ``workdir`` (resuming), exports the best model, tests it.

    The workdir is locked for the run. A config that differs from the recorded one beyond
    :data:`~medvlsm_jax.train.workdir.SAFE_KEYS` stops the run before anything is touched unless
    ``allow_config_change`` (the change is then appended to ``config_history.jsonl``);
    ``fresh`` moves earlier outputs to ``previous/<time>/`` and starts over.
    ``<workdir>/run_stats.json``: seconds per phase and what was compiled (executables built,
    persistent-cache hits, compile seconds; :mod:`medvlsm_jax.train.compile_cache`).
    """
    lead = jax.process_index() == 0
    workdir = workdir_lib.prepare(workdir)
    with _locked(workdir):
        compile_cache.setup(config, workdir)
        compiles, t0 = compile_cache.counters(), time.perf_counter()
        phases = {}
        diff = workdir_lib.check_config(workdir, config, allow_change=allow_config_change or fresh,
                                        has_checkpoints=workdir_lib.has_checkpoints(workdir))
        run = build_run(config)
        ensure_synthetic(config)
        if lead and fresh:
            workdir_lib.archive_previous(workdir)
        _barrier("medvlsm_workdir_ready")

        def record() -> None:  # once the checkpoints restored: a refused run records nothing
            if lead:
                workdir_lib.record_config(workdir, config, diff, forced=allow_config_change, fresh=fresh)

        cache = make_cache(run)
        phases["build_s"], t = time.perf_counter() - t0, time.perf_counter()
        state, meta = train(run, workdir, cache, before_training=record)
        phases["train_s"], t = time.perf_counter() - t, time.perf_counter()
        export_dir = os.path.join(workdir, "export")
        if lead:
            export(run, state, export_dir, {"dataset": config.data.dataset, "prompt": config.data.prompt,
                                            "best_epoch": meta["best_epoch"], "best_val_dice": meta["best_dice"]})
        phases["export_s"], t = time.perf_counter() - t, time.perf_counter()
        results = evaluate_test(run, state, os.path.join(workdir, "eval"), cache) if config.eval.after_training else {}
        phases["test_s"] = time.perf_counter() - t
        stats = {"phases": phases, "total_s": time.perf_counter() - t0, "compile": compile_cache.since(compiles),
                 "compile_cache_dir": jax.config.jax_compilation_cache_dir, "epochs": meta["history"],
                 "feature_cache": cache.stats() if cache is not None else None}
        log.info("compiled %d executables (%d more loaded from the persistent cache) in %.1fs",
                 stats["compile"]["compiled"], stats["compile"]["cache_hits"], stats["compile"]["seconds"])
        if lead:
            with open(os.path.join(workdir, "run_stats.json"), "w") as f:
                json.dump(stats, f, indent=2)
    return {"meta": meta, "export": export_dir, "results": results, "state": state, "run": run, "cache": cache,
            "stats": stats}


def evaluate_checkpoint(config: Any, workdir: str) -> dict[str, Any]:
    """Tests the best (else the newest restorable) checkpoint of ``workdir``; results go to
    ``<workdir>/eval``. The model-defining config keys must match the recorded config."""
    workdir = workdir_lib.prepare(workdir, create=False)
    with _locked(workdir):
        if not workdir_lib.has_checkpoints(workdir):
            raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints; train first (--mode=train) or use "
                                    "--mode=zeroshot")
        workdir_lib.check_config(workdir, config, mode="eval")
        compile_cache.setup(config, workdir)
        run = build_run(config, training=False)
        ensure_synthetic(config)
        ckpts = ckpt_lib.Checkpoints(workdir)
        try:
            restored = ckpts.restore(run.init_state, run.replicated, prefer_best=True, set_aside=False)
        finally:
            ckpts.close()
        if restored is None:
            raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints; train first (--mode=train) or use "
                                    "--mode=zeroshot")
        log.info("evaluating %s", restored.path)
        state = restored.state
        results = evaluate_test(run, state, os.path.join(workdir, "eval"))
    return {"results": results, "state": state, "run": run}


def evaluate_zeroshot(config: Any, workdir: str) -> dict[str, Any]:
    """Tests the ``model.init`` weights without training; results go to ``<workdir>/zeroshot``."""
    workdir = workdir_lib.prepare(workdir)
    with _locked(workdir):
        registry.get_spec(config.model.name).check_zeroshot()
        compile_cache.setup(config, workdir)
        run = build_run(config, training=False)
        if not config.model.init:
            log.warning("zeroshot with a randomly initialised model: set model.init to a converted folder")
        ensure_synthetic(config)
        results = evaluate_test(run, run.init_state, os.path.join(workdir, "zeroshot"))
    return {"results": results, "state": run.init_state, "run": run}
