"""Packed runs: several runs that share a dataset and a frozen encoder, trained in one jitted step.

With the encoder frozen, runs that differ only in their prompt (P0-P9), their seed (data order
and dropout, when ``model.init`` fixes the weights) or their stopping rule share everything but
the decoder's parameters and optimiser state. :func:`train_pack` trains such runs (*members*)
together:

* the members' :class:`~medvlsm_jax.train.run.TrainState` are stacked on a leading axis and the
  run's own train / eval functions (``Steps.fns``, the very functions a separate run jits) are
  ``vmap``-ed over it: one compilation and one dispatch per step for the whole pack;
* **one encoder pass per image**: the encoder is ``vmap``-ed over the members' prompts with the
  image batch left unmapped, so the image tower runs once per image whatever the number of
  members (JAX batches only what depends on the mapped inputs). Which feature leaves depend on
  the image only, on the text only, or on both is read once from the encoder's jaxpr
  (:func:`feature_groups`): image-only leaves (CLIPSeg's ViT activations, CRIS's C3-C5) are
  passed to the vmapped decoder unmapped, and the pack's feature cache stores them once per
  image and text leaves once per prompt text (a separate run's cache stores both per
  (image, prompt) pair). Members whose batches hold different images (different seeds) get
  their own image features;
* each member keeps its own data iterator (its own loader, so its batches, prompt draws and
  padding are exactly its separate run's), its own plateau schedule, early stopping,
  ``metrics.jsonl``, ``latest``/``best`` checkpoints, export and test evaluation, all in its
  own workdir, laid out exactly as :func:`medvlsm_jax.train.loop.train_and_evaluate` lays out a
  separate run (so a member can be evaluated, resumed or re-run on its own);
* a member that stopped (early stopping, ``num_epochs``, ``max_steps``, a non-finite loss) is
  **masked**: the step still computes it (same shapes, no recompilation) but keeps its state;
* resuming: every member restores its own ``latest`` checkpoint; members left at different
  steps (a crash between two members' saves) run alone, the others masked, until they are in
  step again.

Members may differ in ``data.prompt`` / ``data.prompt_override``, ``seed`` (only with
``model.init``: a seeded random encoder differs per seed), their stopping rule
(``train.num_epochs``, ``min_epochs``, ``max_steps``, ``early_stopping_*``,
``checkpoint_every_steps``) and their test evaluation (``eval.datasets``, ``write_masks``,
``hd95``, ``overlays``, ``after_training``, ``resize``); everything else must be equal
(:func:`pack_key`). Results equal the separate runs' within float tolerance (the vmapped text
encoder and decoder may round differently); ``tests/train/test_packed.py`` checks it.

Packs run in one process (a sweep runs one pack per GPU); the state is replicated and the batch
split over the process's devices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from medvlsm_jax.train import checkpoint as ckpt_lib
from medvlsm_jax.train import loop
from medvlsm_jax.train import sharding as shd
from medvlsm_jax.train import workdir as workdir_lib
from medvlsm_jax.train.run import Run, build_run, validate_config
from medvlsm_jax.train.writer import MetricWriter

log = logging.getLogger(__name__)

#: Config fields (dotted) that may differ between the members of a pack.
MEMBER_FIELDS = (
    "seed", "data.prompt", "data.prompt_override",
    "train.num_epochs", "train.min_epochs", "train.max_steps", "train.early_stopping_patience",
    "train.early_stopping_min_delta", "train.checkpoint_every_steps",
    "eval.datasets", "eval.write_masks", "eval.hd95", "eval.overlays", "eval.after_training",
    "eval.resize",
)
IMAGE, TEXT, MIXED = "image", "text", "mixed"


# --------------------------------------------------------------------------- compatibility


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _config_dict(config: Any) -> dict[str, Any]:
    return json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else dict(config)


def pack_key(config: Any) -> str | None:
    """What members of one pack share (a canonical JSON string), or ``None`` when ``config``
    cannot be packed (its encoder is trained, or it has no text input to vary)."""
    flat = _flat(_config_dict(config))
    if not flat.get("model.freeze_encoder", False):
        return None
    shared = {k: v for k, v in flat.items() if k not in MEMBER_FIELDS}
    if not flat.get("model.init"):
        shared["seed"] = flat.get("seed")  # a seeded random encoder differs per seed
    return json.dumps(shared, sort_keys=True, default=str)


def check_compatible(configs: Sequence[Any]) -> None:
    """Raises a ValueError naming the first field that keeps ``configs`` from one pack."""
    if not configs:
        raise ValueError("a pack needs at least one member")
    keys = [pack_key(c) for c in configs]
    if keys[0] is None:
        raise ValueError("packed runs need a frozen encoder (model.freeze_encoder=True)")
    ref = json.loads(keys[0])
    for i, key in enumerate(keys[1:], 1):
        if key is None:
            raise ValueError(f"pack member {i} trains its encoder; packs need frozen encoders")
        other = json.loads(key)
        diff = sorted(k for k in set(ref) | set(other) if ref.get(k) != other.get(k))
        if diff:
            raise ValueError(f"pack member {i} differs from member 0 in {', '.join(diff)}; members may "
                             f"differ only in {', '.join(MEMBER_FIELDS)} (seed only with model.init)")


# --------------------------------------------------------------------------- feature groups


def feature_groups(run: Run, raw: dict[str, Any]) -> tuple[Any, list[str]]:
    """(treedef, group per leaf) of ``run``'s encoder features: ``"image"`` (depends on
    ``pixel_values`` only), ``"text"`` (on the text inputs only) or ``"mixed"``, read from the
    encoder's jaxpr (an equation's outputs depend on whatever any of its inputs depends on)."""
    encode = run.steps.fns["encode"]
    text_keys = [k for k in run.contract.input_keys if k != "pixel_values"]
    state = run.init_state

    def f(pixels, text):
        return jax.tree.leaves(encode(state.params, run.frozen, state.rest, {"pixel_values": pixels, **text}))

    pixels = jnp.asarray(raw["pixel_values"][:1])
    text = {k: jnp.asarray(raw[k][:1]) for k in text_keys}
    closed = jax.make_jaxpr(f)(pixels, text)
    jaxpr = closed.jaxpr
    n_pix = len(jax.tree.leaves(pixels))
    from_image, from_text = set(jaxpr.invars[:n_pix]), set(jaxpr.invars[n_pix:])

    def is_var(v):
        return not hasattr(v, "val")  # Literals carry a value

    for eqn in jaxpr.eqns:
        ins = [v for v in eqn.invars if is_var(v)]
        if any(v in from_image for v in ins):
            from_image.update(eqn.outvars)
        if any(v in from_text for v in ins):
            from_text.update(eqn.outvars)
    groups = []
    for v in jaxpr.outvars:
        t, i = is_var(v) and v in from_text, is_var(v) and v in from_image
        groups.append(MIXED if (t and i) else TEXT if t else IMAGE)
    treedef = jax.tree.structure(jax.eval_shape(lambda p, t: encode(state.params, run.frozen, state.rest,
                                                                      {"pixel_values": p, **t}), pixels, text))
    return treedef, groups


# --------------------------------------------------------------------------- feature cache


class PackCache:
    """Encoder features of a pack, stored by what they depend on: image-only leaves per
    ``(split, dataset_id, index)``, text-only leaves per prompt text, the rest per
    ``(split, dataset_id, index, prompt)``. Host numpy (default) or device arrays; storage
    stops at ``max_bytes``."""

    def __init__(self, groups: list[str], max_bytes: int, on_device: bool = False):
        self.groups = groups
        self.max_bytes = int(max_bytes)
        self.on_device = on_device
        self._rows: dict[str, dict[Any, list[Any]]] = {IMAGE: {}, TEXT: {}, MIXED: {}}
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def stats(self) -> dict[str, float]:
        return {"image_rows": len(self._rows[IMAGE]), "text_rows": len(self._rows[TEXT]),
                "mixed_rows": len(self._rows[MIXED]), "bytes": self.nbytes, "hits": self.hits,
                "misses": self.misses}

    @staticmethod
    def keys(group: str, split: str, batch: dict[str, np.ndarray]) -> list[Any]:
        rows = zip(batch["dataset_id"], batch["index"], batch["prompt"])
        if group == IMAGE:
            return [(split, int(d), int(i)) for d, i, _ in rows]
        if group == TEXT:
            return [str(p) for _, _, p in rows]
        return [(split, int(d), int(i), str(p)) for d, i, p in rows]

    def lookup(self, group: str, keys: list[Any]) -> list[list[Any]] | None:
        store = self._rows[group]
        rows = [store.get(k) for k in keys]
        return rows if all(r is not None for r in rows) else None

    def store(self, group: str, keys: list[Any], leaves: list[np.ndarray]) -> None:
        """``leaves``: this group's leaves, rows along axis 0 in ``keys`` order."""
        store = self._rows[group]
        row_bytes = sum(x[0].nbytes for x in leaves)
        for r, key in enumerate(keys):
            if key in store or self.nbytes + row_bytes > self.max_bytes:
                continue
            row = [x[r] for x in leaves]
            store[key] = [jnp.asarray(x) for x in row] if self.on_device else row
            self.nbytes += row_bytes


# --------------------------------------------------------------------------- packed steps


def _select(active: jax.Array, new: Any, old: Any) -> Any:
    def sel(n, o):
        if jax.dtypes.issubdtype(n.dtype, jax.dtypes.prng_key):
            data = jnp.where(active, jax.random.key_data(n), jax.random.key_data(o))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(n))
        return jnp.where(active, n, o)
    return jax.tree.map(sel, new, old)


@dataclasses.dataclass
class _PackedSteps:
    """The run's train / eval / encode functions vmapped over the pack, jitted per feature
    layout (whether the image leaves are shared by every member)."""

    run: Run
    treedef: Any
    groups: list[str]

    def __post_init__(self):
        self._train: dict[bool, Any] = {}
        self._eval: dict[bool, Any] = {}
        self._encode: dict[bool, Any] = {}
        mesh = self.run.mesh
        self.rep = shd.replicated(mesh)
        self.batch = shd.batch_sharded(mesh)
        self.member_batch = NamedSharding(mesh, P(None, shd.DATA_AXIS))

    def _assemble(self, shared_images: bool, shared: list[Any], member: list[Any]) -> Any:
        """Feature pytree of one member: image leaves from ``shared`` when shared."""
        it_s, it_m, leaves = iter(shared), iter(member), []
        for g in self.groups:
            leaves.append(next(it_s) if (shared_images and g == IMAGE) else next(it_m))
        return jax.tree.unflatten(self.treedef, leaves)

    def train(self, shared_images: bool):
        if shared_images not in self._train:
            fn = self.run.steps.fns["train"]

            def packed(states, frozen, masks, valid, shared, member, active):
                def one(state, mask, ok, member_leaves, act):
                    feats = self._assemble(shared_images, shared, member_leaves)
                    new, out = fn(state, frozen, {"mask": mask, "valid": ok, "features": feats})
                    return _select(act, new, state), out
                return jax.vmap(one)(states, masks, valid, member, active)

            self._train[shared_images] = jax.jit(packed, out_shardings=(self.rep, self.rep), donate_argnums=0)
        return self._train[shared_images]

    def eval(self, shared_images: bool):
        if shared_images not in self._eval:
            fn = self.run.steps.fns["eval"]

            def packed(params, frozen, rest, masks, valid, shared, member):
                def one(p, r, mask, ok, member_leaves):
                    out = fn(p, frozen, r, {"mask": mask, "valid": ok,
                                            "features": self._assemble(shared_images, shared, member_leaves)})
                    return {k: out[k] for k in ("loss", "dice", "iou")}
                return jax.vmap(one)(params, rest, masks, valid, member)

            self._eval[shared_images] = jax.jit(packed)
        return self._eval[shared_images]

    def encode(self, shared_images: bool):
        """(params, frozen, rest, pixels (B|K,B, ...), text {key: (K, B, L)}) -> leaves: image
        leaves (B, ...) when shared, every other leaf (K, B, ...)."""
        if shared_images not in self._encode:
            fn = self.run.steps.fns["encode"]

            def packed(params, frozen, rest, pixels, text):
                one = lambda px, t: jax.tree.leaves(fn(params, frozen, rest, {"pixel_values": px, **t}))  # noqa: E731
                leaves = jax.vmap(one, in_axes=(None if shared_images else 0, 0))(pixels, text)
                return [x[0] if (shared_images and g == IMAGE) else x for x, g in zip(leaves, self.groups)]

            self._encode[shared_images] = jax.jit(packed)
        return self._encode[shared_images]


# --------------------------------------------------------------------------- members


@dataclasses.dataclass
class _Member:
    run: Run
    workdir: str
    ckpts: ckpt_lib.Checkpoints
    writer: MetricWriter | None
    data_iter: Any
    meta: dict[str, Any]
    epoch_loss: float = 0.0
    seen: int = 0
    error: str = ""
    images: int = 0  # training images processed by this process (throughput)
    steps_per_epoch: int = 0
    config_diff: Any = None

    @property
    def tcfg(self) -> Any:
        return self.run.config.train


def _tree_index(tree: Any, k: int) -> Any:
    return jax.tree.map(lambda x: x[k], tree)


def _tree_stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _tree_set(tree: Any, k: int, value: Any) -> Any:
    return jax.tree.map(lambda x, v: x.at[k].set(v), tree, value)


def _member_runs(configs: Sequence[Any]) -> list[Run]:
    """One :class:`Run` per member. Members differ only in :data:`MEMBER_FIELDS`, none of which
    changes the model, the optimiser or the jitted steps except the seed (the initial RNG
    state), so the model is built once per distinct seed and the other members reuse that
    run with their own config (and its compiled steps)."""
    by_seed: dict[int, Run] = {}
    runs = []
    for c in configs:
        if c.seed not in by_seed:
            by_seed[c.seed] = build_run(c)
        else:
            validate_config(c)
        runs.append(dataclasses.replace(by_seed[c.seed], config=c))
    return runs


class Pack:
    """The members of one pack, their stacked state and the packed steps (see the module doc)."""

    def __init__(self, configs: Sequence[Any], workdirs: Sequence[str]):
        if len(configs) != len(workdirs):
            raise ValueError("one workdir per pack member")
        if jax.process_count() != 1:
            raise ValueError("packed runs are single-process; launch one pack per process")
        check_compatible(configs)
        self.runs = _member_runs(configs)
        run0 = self.runs[0]
        if not run0.encoder_frozen:
            raise ValueError("packed runs need a model with a frozen encoder (encoder_prefixes)")
        for i, r in enumerate(self.runs[1:], 1):
            for a, b in zip(jax.tree.leaves(run0.frozen), jax.tree.leaves(r.frozen), strict=True):
                if not np.array_equal(np.asarray(a), np.asarray(b)):
                    raise ValueError(f"pack member {i}'s frozen encoder differs from member 0's "
                                     "(different seeds without model.init)")
        self.workdirs = [os.path.abspath(w) for w in workdirs]
        self.run0 = run0
        self.frozen = run0.frozen
        self.steps: _PackedSteps | None = None
        self.cache: PackCache | None = None

    # ---------------------------------------------------------------- features

    def _prepare(self, batch: dict[str, np.ndarray]) -> None:
        if self.steps is not None:
            return
        treedef, groups = feature_groups(self.run0, batch)
        self.steps = _PackedSteps(self.run0, treedef, groups)
        c = self.run0.config.train
        if c.cache != "off":
            self.cache = PackCache(groups, int(c.cache_max_gb * 2**30), on_device=c.cache == "device")
        log.info("pack of %d: feature leaves %s", len(self.runs), groups)

    def features(self, split: str, batches: list[dict[str, np.ndarray]], states: Any, k: int
                 ) -> tuple[bool, list[Any], list[Any]]:
        """(shared_images, shared leaves, member leaves) of the members' batches, from the cache
        or one packed encoder call (with member ``k``'s state: the encoder reads only the frozen
        parameters, so any member's does)."""
        self._prepare(batches[0])
        steps = self.steps
        rows = [(b["dataset_id"].tolist(), b["index"].tolist()) for b in batches]
        shared_images = all(r == rows[0] for r in rows[1:])
        by_group: dict[str, list[list[Any]]] = {}
        if self.cache is not None:
            cached = {}
            for g in set(steps.groups):
                if g == IMAGE and shared_images:
                    cached[g] = [self.cache.lookup(g, self.cache.keys(g, split, batches[0]))]
                else:
                    cached[g] = [self.cache.lookup(g, self.cache.keys(g, split, b)) for b in batches]
            if all(r is not None for per in cached.values() for r in per):
                by_group = cached
                self.cache.hits += sum(len(b["index"]) for b in batches)
        if by_group:
            xp = jnp if self.cache.on_device else np
            counters = {g: 0 for g in by_group}
            shared, member = [], []
            for g in steps.groups:
                j = counters[g]
                counters[g] += 1
                stacks = [xp.stack([row[j] for row in rows_]) for rows_ in by_group[g]]
                if g == IMAGE and shared_images:
                    shared.append(jax.device_put(stacks[0], steps.batch))
                else:
                    member.append(jax.device_put(xp.stack(stacks), steps.member_batch))
            return shared_images, shared, member
        if self.cache is not None:
            self.cache.misses += sum(len(b["index"]) for b in batches)
        text_keys = [k for k in self.run0.contract.input_keys if k != "pixel_values"]
        if shared_images:
            pixels = shd.put_batch(batches[0]["pixel_values"], steps.batch)
        else:
            pixels = jax.device_put(np.stack([b["pixel_values"] for b in batches]), steps.member_batch)
        text = {k: jax.device_put(np.stack([b[k] for b in batches]), steps.member_batch) for k in text_keys}
        leaves = steps.encode(shared_images)(_tree_index(states.params, k), self.frozen,
                                              _tree_index(states.rest, k), pixels, text)
        shared = [x for x, g in zip(leaves, steps.groups) if shared_images and g == IMAGE]
        member = [x for x, g in zip(leaves, steps.groups) if not (shared_images and g == IMAGE)]
        if self.cache is not None:
            self._store(split, batches, leaves, shared_images)
        return shared_images, shared, member

    def _store(self, split: str, batches: list[dict[str, np.ndarray]], leaves: list[Any],
               shared_images: bool) -> None:
        host = [np.asarray(x) for x in leaves]
        for g in set(self.steps.groups):
            idx = [i for i, gg in enumerate(self.steps.groups) if gg == g]
            if g == IMAGE and shared_images:
                self.cache.store(g, self.cache.keys(g, split, batches[0]), [host[i] for i in idx])
                continue
            for k, b in enumerate(batches):
                self.cache.store(g, self.cache.keys(g, split, b), [host[i][k] for i in idx])

    def _stacked(self, batches: list[dict[str, np.ndarray]]) -> tuple[jax.Array, jax.Array]:
        """The members' masks and valid flags, stacked (K, B, ...) on the devices."""
        put = lambda key: jax.device_put(np.stack([b[key] for b in batches]), self.steps.member_batch)  # noqa: E731
        return put("mask"), put("valid")

    # ---------------------------------------------------------------- training

    def train(self) -> list[dict[str, Any]]:
        """Trains every member (resuming), exports and tests each; returns one dict per member:
        ``meta``, ``results``, ``export``, ``error`` (non-empty when the member failed),
        ``train_images`` and ``seconds`` (the pack's wall time)."""
        start = time.time()
        with contextlib.ExitStack() as locks:
            for w in self.workdirs:  # each member's workdir lock, as train_and_evaluate holds it
                workdir_lib.prepare(w)
                locks.enter_context(workdir_lib.WorkdirLock(w))
            members = self._open_members()
            try:
                states = self._loop(members)
            finally:
                for m in members:
                    if m.writer is not None:
                        m.writer.close()
            return self._finish(members, states, start)

    def _finish(self, members: list[_Member], states: Any, start: float) -> list[dict[str, Any]]:
        out = []
        for k, m in enumerate(members):
            template = _tree_index(states, k)
            best = m.ckpts.restore_best(template, m.run.replicated)
            m.ckpts.close()
            if m.error:
                out.append({"meta": m.meta, "results": {}, "export": "", "error": m.error,
                            "train_images": m.images})
                continue
            state = best[0] if best is not None else template
            export_dir = os.path.join(m.workdir, "export")
            c = m.run.config
            loop.export(m.run, state, export_dir, {"dataset": c.data.dataset, "prompt": c.data.prompt,
                                                    "best_epoch": m.meta["best_epoch"],
                                                    "best_val_dice": m.meta["best_dice"]})
            results = (loop.evaluate_test(m.run, state, os.path.join(m.workdir, "eval"))
                       if c.eval.after_training else {})
            out.append({"meta": m.meta, "results": results, "export": export_dir, "error": "",
                        "train_images": m.images, "state": state, "run": m.run})
        seconds = time.time() - start
        for o in out:
            o["seconds"] = seconds
        return out

    def _open_members(self) -> list[_Member]:
        members = []
        for run, workdir in zip(self.runs, self.workdirs):
            diff = workdir_lib.check_config(workdir, run.config, has_checkpoints=workdir_lib.has_checkpoints(workdir))
            loop.ensure_synthetic(run.config)
            tcfg = run.config.train
            loader = loop.make_loader(run, run.config.data.dataset, "train", tcfg.batch_size, train=True)
            if loader.steps_per_epoch == 0:
                raise ValueError(f"{run.config.data.dataset}/train has {loader.num_examples} examples, "
                                 f"fewer than one batch of {tcfg.batch_size}")
            members.append(_Member(run=run, workdir=workdir,
                                   ckpts=ckpt_lib.Checkpoints(workdir, keep=tcfg.keep_checkpoints),
                                   writer=None, data_iter=iter(loader), meta=loop._initial_meta(),
                                   steps_per_epoch=loader.steps_per_epoch, config_diff=diff))
        return members

    def _restore(self, members: list[_Member]) -> Any:
        states = []
        for m in members:
            state = jax.tree.map(lambda x: x.copy(), m.run.init_state)
            restored = loop.resume(m.ckpts, state, m.run.replicated)
            if restored is not None:
                state, m.meta, data_state = restored
                m.data_iter.set_state(data_state)
            # a resumed epoch's loss sums on from the checkpoint (as loop.train)
            m.epoch_loss, m.seen = m.meta.get("epoch_loss_sum", 0.0), m.meta.get("epoch_steps", 0)
            workdir_lib.record_config(m.workdir, m.run.config, m.config_diff, forced=False, fresh=False)
            m.writer = MetricWriter(m.workdir, True, resume_step=m.meta["step"])
            states.append(state)
        return jax.device_put(_tree_stack(states), self.run0.replicated)

    def _loop(self, members: list[_Member]) -> Any:
        states = self._restore(members)
        K = len(members)
        spe = members[0].steps_per_epoch
        epoch_start = time.time()
        while True:
            for m in members:
                if not m.meta["done"]:
                    reason = loop._should_stop(m.tcfg, m.meta)
                    if reason:
                        m.meta["done"], m.meta["stop_reason"] = True, reason
            live = [k for k, m in enumerate(members) if not m.meta["done"]]
            if not live:
                return states
            low = min(members[k].meta["step"] for k in live)
            active = [k in live and members[k].meta["step"] == low for k in range(K)]
            first = active.index(True)
            batches = [next(m.data_iter) if active[k] else None for k, m in enumerate(members)]
            batches = [b if b is not None else batches[first] for b in batches]
            shared_images, shared, member = self.features("train", batches, states, first)
            masks, valid = self._stacked(batches)
            states, out = self.steps.train(shared_images)(states, self.frozen, masks, valid, shared, member,
                                                          jnp.asarray(active))
            losses = np.asarray(out["loss"])
            epoch_end = []
            for k in range(K):
                if not active[k]:
                    continue
                m, loss = members[k], float(losses[k])
                if not math.isfinite(loss):
                    m.error = (f"loss is {loss} at step {m.meta['step'] + 1} (epoch {m.meta['epoch'] + 1}); "
                               f"stopped. The last good checkpoint (step {m.ckpts.latest.latest_step()}) in "
                               f"{m.ckpts.latest.directory} is left intact")
                    m.meta["done"], m.meta["stop_reason"] = True, "non_finite_loss"
                    log.error("%s: %s", m.workdir, m.error)
                    continue
                m.meta["step"] += 1
                m.epoch_loss, m.seen = m.epoch_loss + loss, m.seen + 1
                m.meta["epoch_loss_sum"], m.meta["epoch_steps"] = m.epoch_loss, m.seen
                m.images += m.tcfg.batch_size
                if m.meta["step"] % m.tcfg.log_every_steps == 0:
                    m.writer.write(m.meta["step"], {"train/loss": loss, "train/dice": float(out["dice"][k]),
                                                    "train/grad_norm": float(out["grad_norm"][k])})
                if m.meta["step"] % spe == 0:
                    epoch_end.append(k)
                elif m.tcfg.checkpoint_every_steps and m.meta["step"] % m.tcfg.checkpoint_every_steps == 0:
                    m.ckpts.save_latest(m.meta["step"], _tree_index(states, k), m.meta, m.data_iter.get_state())
            if epoch_end:
                states = self._end_epochs(members, states, epoch_end, time.time() - epoch_start)
                epoch_start = time.time()

    def _validate(self, members: list[_Member], states: Any, which: list[int]) -> dict[int, dict[str, float]]:
        """Validation loss / Dice / IoU of the members ``which`` (lockstep over their loaders)."""
        iters = {k: iter(loop.make_loader(members[k].run, members[k].run.config.data.dataset, "val",
                                          members[k].run.config.eval.batch_size, train=False)) for k in which}
        sums = {k: np.zeros(4) for k in which}
        K = len(members)
        while True:
            got = {k: next(it, None) for k, it in iters.items()}
            if any(b is None for b in got.values()):
                break
            batches = [got.get(k, got[which[0]]) for k in range(K)]
            shared_images, shared, member = self.features("val", batches, states, which[0])
            masks, valid = self._stacked(batches)
            out = self.steps.eval(shared_images)(states.params, self.frozen, states.rest, masks, valid, shared, member)
            out = {key: np.asarray(v, np.float64) for key, v in out.items()}
            for k in which:
                valid = np.asarray(got[k]["valid"], np.float64)
                sums[k] += [valid.sum()] + [float((out[key][k] * valid).sum()) for key in ("loss", "dice", "iou")]
        result = {}
        for k in which:
            n, loss, dice, iou = sums[k]
            n = max(n, 1.0)
            result[k] = {"loss": float(loss / n), "dice": float(dice / n), "iou": float(iou / n)}
        return result

    def _end_epochs(self, members: list[_Member], states: Any, which: list[int], seconds: float) -> Any:
        vals = self._validate(members, states, which)
        for k in which:
            m = members[k]
            state_k, improved = loop._end_of_epoch(m.run, _tree_index(states, k), m.meta, vals[k],
                                                   m.epoch_loss / max(m.seen, 1), seconds)
            states = states.replace(schedule=_tree_set(states.schedule, k, state_k.schedule))
            m.epoch_loss, m.seen = 0.0, 0
            m.meta["epoch_loss_sum"], m.meta["epoch_steps"] = 0.0, 0
            h = m.meta["history"][-1]
            m.writer.write(m.meta["step"], {"val/loss": h["val_loss"], "val/dice": h["val_dice"],
                                            "val/iou": h["val_iou"], "train/epoch_loss": h["train_loss"],
                                            "lr_scale": h["lr_scale"]})
            log.info("%s epoch %d: train loss %.4f, val loss %.4f, val dice %.4f%s", os.path.basename(m.workdir),
                     m.meta["epoch"], h["train_loss"], h["val_loss"], h["val_dice"], " *best*" if improved else "")
            state_k = _tree_index(states, k)
            data_state = m.data_iter.get_state()
            if improved:
                m.ckpts.save_best(m.meta["step"], state_k, m.meta, data_state)
            m.ckpts.save_latest(m.meta["step"], state_k, m.meta, data_state)
        if self.cache is not None:
            log.info("pack cache %s", self.cache.stats())
        return states


def train_pack(configs: Sequence[Any], workdirs: Sequence[str]) -> list[dict[str, Any]]:
    """Trains ``configs`` as one pack, member ``i`` in ``workdirs[i]`` (see the module doc);
    returns one result dict per member, like :func:`medvlsm_jax.train.loop.train_and_evaluate`'s
    plus ``error`` and ``train_images``."""
    return Pack(configs, workdirs).train()
