"""Executing an expanded plan, resumably: units, locks, results.

Runs are grouped into **units**, each executed by one process:

* ``pack`` — ``train`` runs with the same :func:`medvlsm_jax.train.packed.pack_key` (a frozen
  encoder, the same dataset; P0-P9 and seeds vary), trained together
  (:mod:`medvlsm_jax.train.packed`), at most ``max_pack`` members;
* ``train`` — any other ``train`` run, through :func:`medvlsm_jax.train.loop.train_and_evaluate`;
* ``eval`` — ``zeroshot`` runs of one model (any dataset or prompt), or ``swap`` runs of one
  train run: the model is built and compiled once for the group.

A unit skips its finished runs (``result.json`` present), and its runs another process holds
(their lock); a crashed run resumes from its checkpoints (``train_and_evaluate`` and packs restore
``<run dir>/checkpoints/latest``). A swap whose train run is not finished waits (it is skipped
with a note and runs in a later sweep). A failure is recorded in the run's ``error.json`` and
the sweep goes on; the next sweep retries it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

from medvlsm_jax.sweep.plans import Expansion, RunSpec
from medvlsm_jax.sweep.store import Store, repro_record

log = logging.getLogger(__name__)

#: Config fields that may differ within an ``eval`` group (they do not change the built model).
EVAL_MEMBER_FIELDS = ("data.dataset", "data.prompt", "data.prompt_override", "eval.datasets", "eval.write_masks",
                      "eval.hd95", "eval.overlays", "eval.resize", "eval.after_training", "train.num_epochs")


@dataclasses.dataclass
class Unit:
    kind: str  # pack | train | eval
    runs: list[RunSpec]
    ids: list[str]


def _flat_config(config: Any) -> dict[str, Any]:
    from medvlsm_jax.sweep.plans import _flatten  # noqa: PLC0415

    return _flatten(json.loads(config.to_json_best_effort()))


def _eval_key(spec: RunSpec, config: Any) -> str:
    if spec.kind == "swap":
        return "swap:" + spec.depends
    flat = {k: v for k, v in _flat_config(config).items() if k not in EVAL_MEMBER_FIELDS}
    return "zeroshot:" + json.dumps(flat, sort_keys=True, default=str)


def make_units(expansion: Expansion, *, pack: bool = True, max_pack: int = 10) -> list[Unit]:
    """Groups the runs of ``expansion`` into units (in plan order of their first run)."""
    from medvlsm_jax.train.packed import pack_key  # noqa: PLC0415

    groups: dict[str, Unit] = {}
    order: list[str] = []
    for rid, spec in expansion.items():
        config = expansion.configs[rid]
        if spec.kind == "train":
            key = pack_key(config) if pack else None
            if key is None:
                gkey, kind = "train:" + rid, "train"
            else:
                gkey, kind = "pack:" + key, "pack"
        else:
            gkey, kind = _eval_key(spec, config), "eval"
        n = 0
        while gkey + f"#{n}" in groups and len(groups[gkey + f"#{n}"].ids) >= (max_pack if kind == "pack" else 10**9):
            n += 1
        full = gkey + f"#{n}"
        if full not in groups:
            groups[full] = Unit(kind, [], [])
            order.append(full)
        groups[full].runs.append(spec)
        groups[full].ids.append(rid)
    units = [groups[k] for k in order]
    for u in units:
        if u.kind == "pack" and len(u.ids) == 1:
            u.kind = "train"
    return units


# --------------------------------------------------------------------------- results


def _summaries(results: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for res in results.values():
        out.update(res["per_dataset"])
    return out


def _result(spec: RunSpec, rid: str, config: Any, *, eval_dir: str, results: dict[str, Any], seconds: float,
            images: int, train: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from medvlsm_jax.train.run import eval_datasets  # noqa: PLC0415

    return {
        "id": rid, "kind": spec.kind, "model": spec.model, "settings": list(spec.settings),
        "dataset": config.data.dataset, "prompt": config.data.prompt,
        "eval_datasets": eval_datasets(config), "eval_dir": eval_dir,
        "spec": {"config": spec.config, "arg": spec.arg, "overrides": [list(o) for o in spec.overrides],
                 "depends": spec.depends, "swap": dict(spec.swap)},
        "results": _summaries(results),
        "swap_counts": {k: v.get("swap_counts") for k, v in results.items() if "swap_counts" in v},
        "train": train,
        "repro": repro_record(config, seconds=seconds, images=images, extra=extra),
    }


def _train_summary(meta: dict[str, Any]) -> dict[str, Any]:
    return {"best_epoch": meta["best_epoch"], "best_val_dice": meta["best_dice"], "stop_reason": meta["stop_reason"],
            "epochs": meta["epoch"], "steps": meta["step"], "history": meta["history"]}


def _latest_step(run_dir: str) -> int:
    from medvlsm_jax.train import checkpoint as ckpt_lib  # noqa: PLC0415

    if not os.path.isdir(os.path.join(run_dir, "checkpoints")):
        return 0
    ckpts = ckpt_lib.Checkpoints(run_dir)
    try:
        return int(ckpts.latest.latest_step() or 0)
    finally:
        ckpts.close()


# --------------------------------------------------------------------------- executing units


def missing_data(config: Any) -> str:
    """Why ``config``'s datasets cannot be read (not built in its data dir), or ``""``. Synthetic
    sets are built on first use and never missing."""
    from medvlsm_jax.data import registry, sources  # noqa: PLC0415
    from medvlsm_jax.train.run import eval_datasets  # noqa: PLC0415

    data_dir = config.data.data_dir or None
    names = {m for n in [config.data.dataset, *eval_datasets(config)] for m in registry.members(n)}
    absent = sorted(n for n in names if not registry.get_spec(n).synthetic and not sources.is_built(n, data_dir))
    if not absent:
        return ""
    where = sources.resolve_data_dir(data_dir)
    return (f"dataset(s) {', '.join(absent)} not built in {where}: medvlsm-data build {' '.join(absent)} "
            f"--manual_dir <root> --data_dir {where} (or pass --data-dir)")


def _run_train(store: Store, spec: RunSpec, rid: str, config: Any) -> dict[str, Any]:
    from medvlsm_jax.train import loop  # noqa: PLC0415

    run_dir = store.run_dir(rid)
    step0, start = _latest_step(run_dir), time.time()
    out = loop.train_and_evaluate(config, run_dir)
    seconds, meta = time.time() - start, out["meta"]
    images = (meta["step"] - step0) * config.train.batch_size
    return _result(spec, rid, config, eval_dir="eval", results=out["results"], seconds=seconds, images=images,
                   train=_train_summary(meta), extra={"resumed_from_step": step0})


def _run_pack(store: Store, specs: list[RunSpec], ids: list[str], configs: list[Any]) -> dict[str, Any]:
    from medvlsm_jax.train.packed import train_pack  # noqa: PLC0415

    dirs = [store.run_dir(i) for i in ids]
    steps0 = [_latest_step(d) for d in dirs]
    outs = train_pack(configs, dirs)
    total = sum(o["train_images"] for o in outs)
    results = {}
    for spec, rid, config, out, step0 in zip(specs, ids, configs, outs, steps0):
        if out["error"]:
            results[rid] = RuntimeError(out["error"])
            continue
        results[rid] = _result(spec, rid, config, eval_dir="eval", results=out["results"], seconds=out["seconds"],
                               images=out["train_images"], train=_train_summary(out["meta"]),
                               extra={"resumed_from_step": step0,
                                      "pack": {"members": ids, "images_all_members": total,
                                               "pack_images_per_second": round(total / out["seconds"], 3)}})
    return results


def _run_eval_group(store: Store, specs: list[RunSpec], ids: list[str], configs: list[Any]) -> dict[str, Any]:
    from medvlsm_jax.sweep import swap as swap_lib  # noqa: PLC0415
    from medvlsm_jax.train import loop  # noqa: PLC0415
    from medvlsm_jax.train.run import build_run, validate_config  # noqa: PLC0415

    base = build_run(configs[0], training=False)
    state = None
    if specs[0].kind == "swap":
        state = swap_lib.restore_trained(base, store.run_dir(specs[0].depends))
    elif not base.spec.zeroshot:
        raise ValueError(f"zero-shot evaluation is not defined for model {base.family!r}")
    results: dict[str, Any] = {}
    for spec, rid, config in zip(specs, ids, configs):
        try:
            validate_config(config, training=False)
            run = dataclasses.replace(base, config=config)
            loop.ensure_synthetic(config)
            start = time.time()
            if spec.kind == "swap":
                res = swap_lib.evaluate_swapped(run, state, os.path.join(store.run_dir(rid), "swap"), spec.swap_dict)
                eval_dir = "swap"
            else:
                if not config.model.init:
                    log.warning("%s: zero-shot with a randomly initialised model (no model.init)", rid)
                res = loop.evaluate_test(run, run.init_state, os.path.join(store.run_dir(rid), "zeroshot"))
                eval_dir = "zeroshot"
            images = sum(len(r["rows"]) for r in res.values())
            results[rid] = _result(spec, rid, config, eval_dir=eval_dir, results=res, seconds=time.time() - start,
                                   images=images)
        except Exception as err:  # noqa: BLE001 - recorded per run, the group goes on
            results[rid] = err
            log.error("%s failed: %s", rid, traceback.format_exc())
    return results


@dataclasses.dataclass
class SweepReport:
    done: list[str] = dataclasses.field(default_factory=list)  # finished in this sweep
    skipped_done: list[str] = dataclasses.field(default_factory=list)
    busy: list[str] = dataclasses.field(default_factory=list)
    waiting: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        return (f"{len(self.done)} run(s) finished, {len(self.skipped_done)} already done, "
                f"{len(self.busy)} busy elsewhere, {len(self.waiting)} waiting for their train run, "
                f"{len(self.failed)} failed")


def run_units(expansion: Expansion, units: list[Unit], store: Store, *,
              echo: Callable[[str], None] = print) -> SweepReport:
    """Executes ``units`` (see the module doc); returns what happened to every run."""
    report = SweepReport()
    configs = expansion.configs
    known = store.index().get("runs", {})
    entries = {}
    for u in units:
        for s, rid in zip(u.runs, u.ids):
            entry = {"kind": s.kind, "model": s.model, "dataset": configs[rid].data.dataset,
                     "prompt": configs[rid].data.prompt, "settings": list(s.settings)}
            if store.is_done(rid):
                entry["status"] = "done"
            elif rid not in known:  # another host's "running" / "failed" stays as it is
                entry["status"] = "pending"
            entries[rid] = entry
    store.update_index(entries)
    for n, unit in enumerate(units, 1):
        todo: list[tuple[RunSpec, str]] = []
        locks = []
        for spec, rid in zip(unit.runs, unit.ids):
            if store.is_done(rid):
                store.add_settings(rid, spec.settings)
                report.skipped_done.append(rid)
                continue
            if spec.kind == "swap" and not store.is_done(spec.depends):
                report.waiting.append(rid)
                echo(f"[{n}/{len(units)}] {rid}: waiting for train run {spec.depends}")
                continue
            absent = missing_data(configs[rid])
            if absent:
                report.failed[rid] = absent
                store.write_error(rid, absent)
                store.update_index({rid: {"status": "failed"}})
                echo(f"[{n}/{len(units)}] {rid}: {absent}")
                continue
            lock = store.lock(rid)
            if not lock.acquire():
                report.busy.append(rid)
                echo(f"[{n}/{len(units)}] {rid}: busy ({lock.holder()})")
                continue
            locks.append(lock)
            todo.append((spec, rid))
        if not todo:
            continue
        specs, ids = [s for s, _ in todo], [r for _, r in todo]
        cfgs = [configs[r] for r in ids]
        kind = unit.kind if (unit.kind != "pack" or len(ids) > 1) else "train"
        echo(f"[{n}/{len(units)}] {kind} x{len(ids)}: {', '.join(ids)}")
        store.update_index({r: {"status": "running"} for r in ids})
        unit_start = time.time()
        try:
            try:
                if kind == "pack":
                    outcome = _run_pack(store, specs, ids, cfgs)
                elif kind == "train":
                    outcome = {ids[0]: _run_train(store, specs[0], ids[0], cfgs[0])}
                else:
                    outcome = _run_eval_group(store, specs, ids, cfgs)
            except Exception as err:  # noqa: BLE001 - recorded, the sweep goes on
                log.error("unit %d failed: %s", n, traceback.format_exc())
                outcome = {r: err for r in ids}
            for rid in ids:
                res = outcome.get(rid)
                if isinstance(res, dict):
                    store.write_result(rid, res)
                    report.done.append(rid)
                    store.update_index({rid: {"status": "done"}})
                else:
                    msg = "".join(traceback.format_exception(res)) if isinstance(res, BaseException) else str(res)
                    store.write_error(rid, msg)
                    report.failed[rid] = str(res)
                    store.update_index({rid: {"status": "failed"}})
                    echo(f"  {rid} FAILED: {res}")
        finally:
            for lock in locks:
                lock.release()
        echo(f"[{n}/{len(units)}] {time.time() - unit_start:.1f} s")
    return report
