"""``medvlsm-bench``: throughput of every model, side by side with the PyTorch references.

    medvlsm-bench models [--models clipseg,cris] [--variant base] [--modes inference,frozen,full]
        [--batch 4,8] [--size 352] [--dtypes fp32,bf16] [--devices 1,all] [--per-device]
        [--iters 5] [--warmup 2] [--torch] [--torch-compile] [--out benchmarks/results]
    medvlsm-bench data   [--dataset synthetic_polyp] [--workers 0,2] [--batch 16] [--batches 20]
    medvlsm-bench epoch  [--variant base] [--train-size 800]   # epoch s with/without the feature cache
    medvlsm-bench curves [...]   # CLIPSeg img/s vs batch size and image size (medvlsm_jax.bench.curves)
    medvlsm-bench processes [--layouts 1x1,1x2,2x1]   # scaling across processes (medvlsm_jax.bench.bench_processes)
    medvlsm-bench compile [--variant base] [--modes frozen,full]  # compile s, blocks scanned vs unrolled
    medvlsm-bench headline [...]  # the paper's 90-epoch Kvasir-sized run end to end (medvlsm_jax.bench.headline)
    medvlsm-bench suite [...]     # gpu_check.sh's prioritised rows under a time budget (medvlsm_jax.bench.suite)

Modes (the real steps of :mod:`medvlsm_jax.train.run`, built with ``build_run``):

* ``inference`` — the model's forward (eval mode), jitted over a data-parallel mesh;
* ``frozen`` — the paper-faithful CLIPSeg finetune step: the trainer's jitted ``encode`` of the
  frozen encoders followed by its train step on the decoder (no feature cache);
* ``full`` — the full finetune step (every parameter trained; CRIS's paper recipe, the CNNs' only
  training mode: ``frozen`` rows of models in ``TRAINS_WHOLE`` are skipped with the reason).

Inputs: :func:`make_batch` builds each model's batch from its resolved input contract (image
size, CLIP or BERT ids of the contract's length with an attention mask, or pixels only for an
image-only model); both sides are fed the same arrays, recorded per row as ``inputs``.
PyTorch references: ``REFERENCES`` (CLIPSeg: transformers; BiomedCLIPSeg: medvlsm's module on
open_clip; Unet/UnetPlusPlus/DeepLabV3Plus: segmentation_models_pytorch).

Every row: compile time apart, median img/s of waited-for steps on a device-resident batch,
spread, FLOPs per image (XLA cost analysis), MFU (see :mod:`medvlsm_jax.bench.harness`), memory.
``bf16`` = the trainer's ``mixed_precision`` (bfloat16 compute); PyTorch: autocast (AMP).
Batch sizes are global (split over the devices) unless ``--per-device``. Device counts other
than the visible count run in a child process that sees only that many devices
(``CUDA_VISIBLE_DEVICES`` on GPU, ``--xla_force_host_platform_device_count`` on CPU).
Results: ``<out>/<date>_<device>/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from medvlsm_jax.bench import harness
from medvlsm_jax.config import load_config
from medvlsm_jax.models import registry

MODES = ("inference", "frozen", "full")
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
# models with a PyTorch reference: module providing torch_model / reference_step / TRAIN_OVERRIDES
# (and optionally SKIPPED_MODES: {mode: why there is no reference row}); ``module:family`` binds
# ``torch_model``'s ``family`` argument (one module for several families)
REFERENCES = {"clipseg": "medvlsm_jax.bench.bench_clipseg",
              "biomedclipseg": "medvlsm_jax.bench.bench_biomedclipseg",
              "unet": "medvlsm_jax.bench.bench_smp:unet",
              "unetpp": "medvlsm_jax.bench.bench_smp:unetpp",
              "deeplabv3plus": "medvlsm_jax.bench.bench_smp:deeplabv3plus"}
# families trained whole by their recipe (configs/cnn.py: freeze_encoder=False): no ``frozen`` rows
TRAINS_WHOLE = ("unet", "unetpp", "deeplabv3plus")
FROZEN_SKIP = "trains whole (medvlsm's CNN recipe: freeze_encoder=False); see the full rows"
# run configs not named after the family (configs/<name>.py:<arg>)
CONFIG_NAMES = {m: f"cnn:model={m}" for m in TRAINS_WHOLE}
# token ids of the synthetic prompts: CLIP BPE (bos, eos = padding) and BERT WordPiece (BiomedBERT's
# [PAD] 0, [CLS] 2, [SEP] 3, first word id 5)
CLIP_BOS, CLIP_EOS = 49406, 49407
BERT_PAD, BERT_CLS, BERT_SEP, BERT_FIRST_WORD = 0, 2, 3, 5
PROMPT_WORDS = 5
# subcommands with their own options, handled by another module's main(argv)
DELEGATED = {"curves": "medvlsm_jax.bench.curves", "processes": "medvlsm_jax.bench.bench_processes",
             "headline": "medvlsm_jax.bench.headline", "suite": "medvlsm_jax.bench.suite"}
PAPER_EPOCHS = 90  # the paper-faithful CLIPSeg finetune length the epoch projection is for


@dataclasses.dataclass
class Spec:
    """One ``models`` run: the cross product of its lists (one process, one device count)."""

    models: list[str]
    variant: str = "base"
    modes: list[str] = dataclasses.field(default_factory=lambda: list(MODES))
    batches: list[int] = dataclasses.field(default_factory=lambda: [4])
    size: int = 0  # 0: each model's default resolution
    dtypes: list[str] = dataclasses.field(default_factory=lambda: ["fp32"])
    per_device: bool = False
    warmup: int = 2
    iters: int = 5
    torch: bool = False
    torch_compile: bool | str = False  # True: eager and torch.compile rows; "only": the compiled one
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # model config fields (scan_layers ...)
    profile_dir: str = ""  # when set: profile 3 steps per Flax row there (medvlsm_jax.bench.profile)


# --------------------------------------------------------------------------- inputs and configs


def make_batch(batch: int, contract: Any, seed: int = 0, vocab_size: int | None = None) -> dict[str, np.ndarray]:
    """A random batch as the model's resolved input contract (:class:`~medvlsm_jax.models.contract.InputContract`)
    asks: normalised NHWC images of ``contract.image_size``, binary masks, and for a text model
    ``input_ids`` / ``attention_mask`` of ``contract.text.max_length`` tokens — CLIP BPE (bos, 5 words,
    eos, then the contract's padding id or eos) or BERT WordPiece ([CLS], 5 words, [SEP], then
    padding). Image-only models get ``pixel_values`` (and ``mask``) only. Word ids are drawn below
    ``vocab_size`` (the model config's, when it has one)."""
    rng = np.random.default_rng(seed)
    h, w = contract.image_size
    out = {"pixel_values": rng.standard_normal((batch, h, w, 3), dtype=np.float32)}
    text = contract.text
    if text is not None:
        n = text.max_length
        if text.kind == "clip":
            first, last, pad, start, end = 1, CLIP_BOS, CLIP_EOS if text.pad_id is None else text.pad_id, CLIP_BOS, CLIP_EOS
        elif text.kind == "bert":
            first, last, pad, start, end = BERT_FIRST_WORD, 30522, BERT_PAD if text.pad_id is None else text.pad_id, \
                BERT_CLS, BERT_SEP
        else:
            raise ValueError(f"no synthetic prompts for tokenizer kind {text.kind!r}")
        last = min(last, vocab_size or last)
        length = min(PROMPT_WORDS + 2, n)
        ids = np.full((batch, n), pad, np.int32)
        ids[:, 0] = start
        ids[:, 1:length - 1] = rng.integers(first, last, (batch, length - 2))
        ids[:, length - 1] = end
        out["input_ids"] = ids
        out["attention_mask"] = (np.arange(n) < length).astype(np.int32)[None].repeat(batch, 0)
    out["mask"] = (rng.random((batch, h, w)) > 0.5).astype(np.float32)
    return out


def model_batch(model: str, variant: str, batch: int, size: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """:func:`make_batch` for ``model``'s contract (word ids below its config's ``vocab_size``)."""
    cfg = registry.get_spec(model).config(variant)
    return make_batch(batch, registry.default_contract(model, variant, size or None), seed,
                      getattr(cfg, "vocab_size", None))


def reference(model: str) -> Any:
    """``model``'s PyTorch reference module (``REFERENCES``), ``torch_model`` bound to its family
    for a ``module:family`` entry."""
    import functools
    import types

    module_name, _, family = REFERENCES[model].partition(":")
    module = importlib.import_module(module_name)
    if not family:
        return module
    ns = types.SimpleNamespace(**{k: getattr(module, k) for k in dir(module) if not k.startswith("__")})
    ns.torch_model = functools.partial(module.torch_model, family=family)
    return ns


def _inputs(data: dict[str, Any]) -> dict[str, list[int]]:
    """The shapes of the arrays a step was fed (recorded in each row)."""
    return {k: list(np.shape(v)) for k, v in data.items()}


def train_config(model: str, variant: str, mode: str, batch: int, size: int, dtype: str,
                 overrides: dict[str, Any] | None = None) -> Any:
    """The family's paper recipe for ``mode`` (the reference's optimiser when it has one), with
    ``overrides`` of the model config (e.g. ``scan_layers``, ``attention``)."""
    name = CONFIG_NAMES.get(model, model)
    c = load_config(f"{name}{',' if ':' in name else ':'}variant={variant}")
    for k, v in (overrides or {}).items():
        c.model.overrides[k] = v
    c.data.image_size = size or 0  # 0: the family's contract size
    c.model.freeze_encoder = mode == "frozen"
    c.train.update(batch_size=batch, cache="off", progress=False, mixed_precision=dtype == "bfloat16")
    if model in REFERENCES:
        c.train.update(**reference(model).TRAIN_OVERRIDES)
    return c


def _default_size(model: str) -> int:
    """The family's contract size (its base variant)."""
    return registry.default_contract(model).image_size[0]


def _config_fields(model: str) -> set[str]:
    return {f.name for f in dataclasses.fields(registry.get_spec(model).config_cls)}


# --------------------------------------------------------------------------- Flax steps


def flax_inference(config: Any, batch: dict[str, np.ndarray], count: bool = True
                   ) -> tuple[Callable, list[harness.Compiled]]:
    """The model's eval-mode forward, jitted over the data mesh."""
    from medvlsm_jax.train import run as run_lib
    from medvlsm_jax.train import sharding as shd

    spec = registry.get_spec(config.model.name)
    model_cfg = run_lib.model_config(config)
    keys = run_lib.resolve_contract(config, spec, model_cfg).input_keys
    model = spec.build(model_cfg, nnx.Rngs(config.seed))
    model.eval()
    graphdef, state = nnx.split(model)
    mesh = shd.make_mesh()
    rep, bat = shd.replicated(mesh), shd.batch_sharded(mesh)

    def forward(state, inputs):
        return nnx.merge(graphdef, state)(**inputs)

    state = jax.device_put(state, rep)
    inputs = shd.put_batch({k: batch[k] for k in keys}, bat)
    c = harness.compile_jax(jax.jit(forward, in_shardings=(rep, bat), out_shardings=bat), state, inputs, flops=count)
    c.inputs = _inputs(inputs)
    return lambda: c.fn(state, inputs), [c]


def flax_train(config: Any, batch: dict[str, np.ndarray], count: bool = True
               ) -> tuple[Callable, list[harness.Compiled]]:
    """The trainer's train step (after its frozen-encoder ``encode`` when the encoders are frozen)."""
    from medvlsm_jax.train import sharding as shd
    from medvlsm_jax.train.run import build_run

    run = build_run(config, tokenizer=False)
    state = run.init_state
    raw = shd.put_batch({k: batch[k] for k in run.contract.input_keys}, run.batch_sharding)
    feed = {"mask": shd.put_batch(batch["mask"], run.batch_sharding)}
    compiled = []
    if run.encoder_frozen:
        enc = harness.compile_jax(run.steps.encode, state.params, run.frozen, state.rest, raw, flops=count)
        compiled.append(enc)
        feed["features"] = enc.fn(state.params, run.frozen, state.rest, raw)
    else:
        feed.update(raw)
    step = harness.compile_jax(run.steps.train, state, run.frozen, feed, flops=count)
    step.inputs = {**_inputs(raw), **_inputs({"mask": feed["mask"]})}
    compiled.append(step)

    def train_step():
        nonlocal state
        if run.encoder_frozen:
            feed["features"] = enc.fn(state.params, run.frozen, state.rest, raw)
        state, out = step.fn(state, run.frozen, feed)
        return out
    return train_step, compiled


# --------------------------------------------------------------------------- rows


def _row_key(spec: Spec, model: str, mode: str, dtype: str, batch: int, size: int) -> dict[str, Any]:
    key = {"model": model, "variant": spec.variant, "mode": mode, "dtype": dtype, "batch": batch,
           "size": size, "devices": jax.device_count()}
    if spec.overrides:
        key["overrides"] = dict(spec.overrides)
    return key


def _measure(key: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``key`` + ``fn()``'s figures, or + ``error`` (the suite goes on past a failing row)."""
    try:
        return {**key, **fn()}
    except Exception as e:  # noqa: BLE001 - recorded in the results, e.g. OOM or torch.compile
        return {**key, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
    finally:
        gc.collect()


def flax_row(spec: Spec, model: str, mode: str, dtype: str, batch: int) -> dict[str, Any]:
    size = spec.size or _default_size(model)
    key = {**_row_key(spec, model, mode, dtype, batch, size), "impl": "flax"}
    if dtype == "bfloat16" and "dtype" not in _config_fields(model):
        return {**key, "skipped": f"{model} has no compute-dtype option"}
    if mode == "frozen" and model in TRAINS_WHOLE:
        return {**key, "skipped": FROZEN_SKIP}
    config = train_config(model, spec.variant, mode, batch, size, dtype, spec.overrides)
    data = model_batch(model, spec.variant, batch, size)

    def measure():
        step, compiled = (flax_inference if mode == "inference" else flax_train)(config, data)
        times = harness.time_steps(step, batch=batch, warmup=spec.warmup, iters=spec.iters)
        out = harness.summarize_jax(times, compiled, batch=batch, dtype=dtype, n_devices=jax.device_count())
        out["inputs"] = compiled[-1].inputs
        if spec.profile_dir:
            from medvlsm_jax.bench import profile

            out["profile"] = profile.trace_steps(step, os.path.join(spec.profile_dir, f"{model}_{mode}_{dtype}_b{batch}"))
        if mode != "inference":
            out["train"] = {k: config.train[k] for k in ("optimizer", "lr", "weight_decay", "grad_clip", "loss")}
        return out
    return _measure(key, measure)



def torch_rows(spec: Spec, model: str, mode: str, dtype: str, batch: int) -> list[dict[str, Any]]:
    """The PyTorch reference of ``model`` on one device: eager (+ torch.compile), AMP for bf16."""
    import torch

    ref = reference(model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_float32_matmul_precision("high")  # TF32 on GPU, like JAX's default matmul precision
    size = spec.size or _default_size(model)
    data = model_batch(model, spec.variant, batch, size)
    contract = registry.default_contract(model, spec.variant, size)
    fed = {k: data[k] for k in (*contract.input_keys, *(("mask",) if mode != "inference" else ()))}
    amp = dtype == "bfloat16"
    skipped = (FROZEN_SKIP if mode == "frozen" and model in TRAINS_WHOLE
               else getattr(ref, "SKIPPED_MODES", {}).get(mode))
    rows = []
    for compiled in ((True,) if spec.torch_compile == "only" else (False, True) if spec.torch_compile else (False,)):
        impl = "torch" + ("-compile" if compiled else "") + ("-amp" if amp else "")
        key = {**_row_key(spec, model, mode, dtype, batch, size), "devices": 1, "impl": impl}
        key.pop("overrides", None)  # model config switches of the Flax side
        if skipped:
            rows.append({**key, "skipped": skipped})
            continue

        def measure():
            step = ref.reference_step(ref.torch_model(spec.variant, device), mode, fed, device=device, amp=amp,
                                      compile_model=compiled)
            t0 = time.perf_counter()
            step()  # torch.compile compiles here
            first_s = time.perf_counter() - t0
            out = harness.time_torch(step, batch=batch, warmup=max(spec.warmup - 1, 0), iters=spec.iters)
            return {**out, "first_step_s": first_s, "inputs": _inputs(fed)}
        rows.append(_measure(key, measure))
    return rows


def _grid(spec: Spec):
    for model in spec.models:
        for mode in spec.modes:
            for dtype in (DTYPES[d] for d in spec.dtypes):
                for b in spec.batches:
                    yield model, mode, dtype, b


def run_flax(spec: Spec) -> list[dict[str, Any]]:
    """Every Flax row of ``spec`` on the visible devices."""
    n = jax.device_count()
    rows = []
    for model, mode, dtype, b in _grid(spec):
        batch = b * n if spec.per_device else b
        if batch % n:
            rows.append({**_row_key(spec, model, mode, dtype, batch, spec.size or _default_size(model)),
                         "impl": "flax", "skipped": f"batch {batch} does not split over {n} devices"})
        else:
            rows.append(flax_row(spec, model, mode, dtype, batch))
    return rows


def run_torch(spec: Spec) -> list[dict[str, Any]]:
    """The PyTorch rows of ``spec`` (models with a reference; one device, per-device batch)."""
    return [row for model, mode, dtype, b in _grid(spec) if model in REFERENCES
            for row in torch_rows(spec, model, mode, dtype, b)]


def device_env(n: int) -> dict[str, str]:
    """This process's environment restricted to the first ``n`` devices."""
    env = dict(os.environ)
    platform = jax.devices()[0].platform
    if platform == "cpu":
        for dtype in DTYPES.values():  # one measured peak for every device count
            env[harness.cpu_peak_env(dtype)] = str(harness.measured_cpu_peak(dtype))
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
    elif platform == "gpu":
        visible = env.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(jax.local_device_count())]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids[:n])
    else:
        raise NotImplementedError(f"device-count sweeps are implemented for cpu and gpu, not {platform}")
    return env


def run_on_devices(spec: Spec, n: int) -> list[dict[str, Any]]:
    """``run_flax(spec)`` on ``n`` devices: here when that is the visible count, else in a child."""
    if n == jax.device_count():
        return run_flax(spec)
    if n > jax.device_count():
        raise ValueError(f"--devices {n}: only {jax.device_count()} devices are visible")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        cmd = [sys.executable, "-m", "medvlsm_jax.bench.bench", "worker", json.dumps(dataclasses.asdict(spec)), out]
        subprocess.run(cmd, env=device_env(n), check=True)
        with open(out) as f:
            return json.load(f)


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Flax rows on one device get ``vs_<impl>``: the img/s ratio to each PyTorch row of the same
    model, mode, dtype, batch and size. Rows on n > 1 devices get ``scaling`` = img/s over n x the
    one-device img/s, at the same per-device batch (weak) or else the same global batch (strong)."""
    same = ("model", "variant", "mode", "dtype", "size")
    done = [r for r in rows if "img_per_s" in r]
    for r in (r for r in done if r["impl"] == "flax"):
        peers = [t for t in done if all(t[k] == r[k] for k in same)]
        if r["devices"] == 1:
            for t in (t for t in peers if t["impl"] != "flax" and t["batch"] == r["batch"]):
                r[f"vs_{t['impl']}"] = r["img_per_s"] / t["img_per_s"]
            continue
        ones = {t["batch"]: t for t in peers if t["impl"] == "flax" and t["devices"] == 1}
        for kind, b in (("weak", r["batch"] // r["devices"]), ("strong", r["batch"])):
            if b in ones:
                r["scaling"], r["scaling_kind"] = r["img_per_s"] / (r["devices"] * ones[b]["img_per_s"]), kind
                break


# --------------------------------------------------------------------------- input pipeline


def pipeline_rows(dataset: str, data_dir: str, model: str, workers: list[int], batch_size: int,
                  batches: int) -> list[dict[str, Any]]:
    """Loader examples/s on the host (:func:`medvlsm_jax.bench.bench_data.measure`) and into the
    devices (each batch put on the data mesh and waited for)."""
    from medvlsm_jax.bench import bench_data
    from medvlsm_jax.data import make_loader
    from medvlsm_jax.models.registry import default_contract
    from medvlsm_jax.train import sharding as shd

    sharding = shd.batch_sharded(shd.make_mesh())
    contract = default_contract(model)
    rows = []
    for w in workers:
        host = bench_data.measure(dataset, data_dir, model, w, batch_size, batches)
        it = iter(make_loader(dataset, "train", contract, "random", batch_size, data_dir=data_dir, num_epochs=None,
                              worker_count=w))

        def to_device():
            b = next(it)
            return shd.put_batch({k: b[k] for k in (*contract.input_keys, "mask")}, sharding)
        dev = harness.time_steps(to_device, batch=batch_size, warmup=3, iters=batches)
        rows.append({"dataset": dataset, "model": model, "workers": w, "batch": batch_size,
                     "host_img_per_s": host, "device_img_per_s": dev["img_per_s"], "device_spread": dev["spread"]})
    return rows


# --------------------------------------------------------------------------- reporting


def _mib(x: int | None) -> float | None:
    return x / 2**20 if x else None


def models_table(rows: list[dict[str, Any]]) -> str:
    header = ["model", "mode", "impl", "dtype", "batch", "size", "dev", "img/s", "spread", "compile s",
              "GFLOP/img", "XLA-compiled GFLOP/img", "TFLOP/s", "MFU", "XLA MiB/dev", "peak MiB", "vs PyTorch",
              "scaling", "note"]
    body = []
    for r in rows:
        vs = ", ".join(f"{k[3:]} {v:.2f}x" for k, v in r.items() if k.startswith("vs_"))
        note = " ".join([f"{k}={v}" for k, v in r.get("overrides", {}).items()]
                        + [r.get("error") or r.get("skipped") or ""]).strip()
        body.append([r["model"], r["mode"], r["impl"], r["dtype"], r["batch"], r["size"], r["devices"],
                     r.get("img_per_s"), r.get("spread"), r.get("compile_s", r.get("first_step_s")),
                     r.get("gflops_per_img"), r.get("xla_compiled_gflops_per_img"), r.get("tflops_per_s"),
                     r.get("mfu"), _mib(r.get("xla_bytes_per_device")), _mib(r.get("process_peak_bytes")), vs,
                     r.get("scaling"), note])
    return harness.markdown_table(header, body)


def pipeline_table(rows: list[dict[str, Any]]) -> str:
    header = ["dataset", "preprocessing", "workers", "batch", "host img/s", "to-device img/s"]
    return harness.markdown_table(header, [[r["dataset"], r["model"], r["workers"], r["batch"],
                                            r["host_img_per_s"], r["device_img_per_s"]] for r in rows])


def peaks(dtypes: list[str]) -> dict[str, Any]:
    """The peak FLOP/s MFU is measured against, per dtype (measured now on CPU)."""
    out = {}
    for d in dtypes:
        value, source = harness.peak_flops(DTYPES[d])
        out[DTYPES[d]] = {"tflops_per_device": value / 1e12 if value else None, "source": source}
    return out


def report(name: str, result: dict[str, Any], table: str, args: argparse.Namespace) -> None:
    """Prints the table and writes ``<name>.json`` / ``<name>.md`` under the results folder."""
    print(table)
    if args.no_write:
        return
    out_dir = harness.results_dir(args.out)
    env = result["env"]
    head = (f"# {name}: {env['device']} x{env['device_count']} ({env['backend']}), {env['date']}\n\n"
            f"jax {env['jax']}" + (f", torch {env['torch']} ({env['torch_threads']} threads)" if "torch" in env else "")
            + f", {env['cpu_count']} CPUs\n\n")
    harness.write_markdown(name, head + table, out_dir)
    path = harness.write_result(name, result, out_dir)
    print(f"\nwrote {path}")


# --------------------------------------------------------------------------- CLI


def csv_arg(cast: Callable[[str], Any] = str) -> Callable[[str], list[Any]]:
    return lambda s: [cast(x.strip()) for x in s.split(",") if x.strip()]


def _device_counts(values: list[str]) -> list[int]:
    n = jax.device_count()
    counts = sorted({n if v == "all" else int(v) for v in values})
    bad = [c for c in counts if not 1 <= c <= n]
    if bad:
        raise SystemExit(f"--devices {bad}: choose counts between 1 and the {n} visible devices (or 'all')")
    return counts


def cmd_models(args: argparse.Namespace) -> dict[str, Any]:
    bad = [m for m in args.modes if m not in MODES] + [d for d in args.dtypes if d not in DTYPES]
    if bad:
        raise SystemExit(f"unknown mode/dtype {bad}; modes: {', '.join(MODES)}; dtypes: {', '.join(DTYPES)}")
    spec = Spec(models=args.models, variant=args.variant, modes=args.modes, batches=args.batch, size=args.size,
                dtypes=args.dtypes, per_device=args.per_device, warmup=args.warmup, iters=args.iters,
                torch=args.torch, torch_compile=args.torch_compile, overrides=args.override)
    counts = _device_counts(args.devices)
    result = {"benchmark": "models", "env": harness.environment(), "peaks": peaks(spec.dtypes),
              "spec": dataclasses.asdict(spec), "device_counts": counts, "rows": []}
    for n in counts:
        result["rows"] += run_on_devices(spec, n)
    if spec.torch:
        result["rows"] += run_torch(spec)
    add_ratios(result["rows"])
    report(args.name or "models", result, models_table(result["rows"]), args)
    return result


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def overrides_arg(text: str) -> dict[str, Any]:
    """``'scan_layers=false,attention=xla'`` -> ``{'scan_layers': False, 'attention': 'xla'}``."""
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--override {item!r}: expected KEY=VALUE")
        out[key.strip()] = _value(value)
    return out


def compile_rows(models: list[str], variant: str, modes: list[str], batch: int, size: int, dtypes: list[str],
                 scans: list[bool]) -> list[dict[str, Any]]:
    """Seconds to lower and compile each mode's executables (inference: the forward; frozen: the
    frozen ``encode`` + the decoder train step; full: the train step) and the eval step, with the
    transformer blocks scanned or unrolled. Nothing is run; FLOPs are not counted."""
    from medvlsm_jax.train.run import build_run

    rows = []
    for model in models:
        sz = size or _default_size(model)
        data = model_batch(model, variant, batch, sz)
        for dtype in (DTYPES[d] for d in dtypes):
            for mode in modes:
                for scan in scans:
                    key = {"model": model, "variant": variant, "mode": mode, "dtype": dtype, "batch": batch,
                           "size": sz, "scan_layers": scan}

                    def measure():
                        config = train_config(model, variant, mode, batch, sz, dtype, {"scan_layers": scan})
                        fn = flax_inference if mode == "inference" else flax_train
                        _, compiled = fn(config, data, count=False)
                        out = {"compile_s": sum(c.compile_s for c in compiled),
                               "compile_cpu_s": sum(c.compile_cpu_s for c in compiled),
                               "lower_s": sum(c.lower_s for c in compiled),
                               "executables": [round(c.compile_s, 2) for c in compiled],
                               "executables_cpu": [round(c.compile_cpu_s, 2) for c in compiled]}
                        if mode != "inference":  # the eval step the trainer validates with
                            run = build_run(config, tokenizer=False)
                            inputs = shd_inputs(run, data)
                            ev = harness.compile_jax(run.steps.eval, run.init_state.params, run.frozen,
                                                     run.init_state.rest, inputs, flops=False)
                            out["eval_compile_s"], out["eval_compile_cpu_s"] = ev.compile_s, ev.compile_cpu_s
                        return out
                    rows.append(_measure(key, measure))
    return rows


def shd_inputs(run: Any, data: dict[str, np.ndarray]) -> dict[str, Any]:
    """The eval step's inputs for a host batch: features (frozen encoder) or raw inputs, + mask."""
    from medvlsm_jax.train import sharding as shd

    raw = shd.put_batch({k: data[k] for k in run.contract.input_keys}, run.batch_sharding)
    inputs = {"mask": shd.put_batch(data["mask"], run.batch_sharding)}
    if run.encoder_frozen:
        s = run.init_state
        inputs["features"] = run.steps.encode(s.params, run.frozen, s.rest, raw)
    else:
        inputs.update(raw)
    return inputs


def cmd_compile(args: argparse.Namespace) -> dict[str, Any]:
    scans = [_value(v) for v in args.scan]
    rows = compile_rows(args.models, args.variant, args.modes, args.batch, args.size, args.dtypes, scans)
    result = {"benchmark": "compile", "env": harness.environment(), "rows": rows}
    header = ["model", "mode", "dtype", "batch", "size", "scan_layers", "compile s (step)", "CPU s", "of which lowering s",
              "per executable s", "per executable CPU s", "eval step compile s", "eval CPU s", "note"]
    table = harness.markdown_table(header, [[r["model"], r["mode"], r["dtype"], r["batch"], r["size"],
                                             r["scan_layers"], r.get("compile_s"), r.get("compile_cpu_s"),
                                             r.get("lower_s"), " + ".join(map(str, r.get("executables", []))),
                                             " + ".join(map(str, r.get("executables_cpu", []))),
                                             r.get("eval_compile_s"), r.get("eval_compile_cpu_s"), r.get("error", "")]
                                            for r in rows])
    report(args.name or "compile", result, table, args)
    return result


def cmd_data(args: argparse.Namespace) -> dict[str, Any]:
    import tensorflow_datasets as tfds

    from medvlsm_jax.data import build_dataset

    tfds.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or tmp
        if not args.data_dir:
            build_dataset(args.dataset, data_dir=data_dir)
        rows = pipeline_rows(args.dataset, data_dir, args.preprocessing, args.workers, args.batch[0], args.batches)
    result = {"benchmark": "data", "env": harness.environment(), "rows": rows}
    report(args.name or "data", result, pipeline_table(rows), args)
    return result


def cmd_epoch(args: argparse.Namespace) -> dict[str, Any]:
    """CLIPSeg paper-faithful epoch time on a synthetic set, without and with the frozen-feature
    cache (:func:`medvlsm_jax.bench.bench_train.epoch_seconds`: the trainer's real loop, second epoch of
    each run, 16-image validation included), and the projected 90-epoch finetune."""
    from medvlsm_jax.bench import bench_train

    with tempfile.TemporaryDirectory() as root:
        sec = bench_train.epoch_seconds(args.variant, args.train_size, root)
    row = {"model": "clipseg", "variant": args.variant, "train_images": args.train_size, "batch": 16,
           "uncached_epoch_s": sec["off"], "cached_epoch_s": sec["host"], "cache_speedup": sec["off"] / sec["host"],
           f"projected_{PAPER_EPOCHS}_epochs_s": sec["off"] + (PAPER_EPOCHS - 1) * sec["host"]}
    result = {"benchmark": "epoch", "env": harness.environment(), "rows": [row]}
    header = ["model", "train images", "batch", "epoch s (no cache)", "epoch s (cache)", "speed-up",
              f"{PAPER_EPOCHS} epochs s (projected)"]
    table = harness.markdown_table(header, [[f"clipseg-{args.variant}", args.train_size, 16, sec["off"], sec["host"],
                                             row["cache_speedup"], row[f"projected_{PAPER_EPOCHS}_epochs_s"]]])
    report(args.name or "epoch", result, table, args)
    return result


def cmd_worker(args: argparse.Namespace) -> None:
    """Internal: ``run_flax`` of a JSON spec on this process's devices, rows to a JSON file."""
    rows = run_flax(Spec(**json.loads(args.spec)))
    with open(args.rows_out, "w") as f:
        json.dump(rows, f)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medvlsm-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def outputs(q: argparse.ArgumentParser) -> None:
        q.add_argument("--out", default="benchmarks/results", help="results root (<out>/<date>_<device>/)")
        q.add_argument("--name", default=None, help="file stem of the JSON/markdown results")
        q.add_argument("--no-write", action="store_true", help="print only")

    m = sub.add_parser("models", help="inference / finetune steps, Flax and PyTorch")
    m.add_argument("--models", type=csv_arg(), default=["clipseg"])
    m.add_argument("--variant", default="base", help="model variant (base, tiny)")
    m.add_argument("--modes", type=csv_arg(), default=list(MODES))
    m.add_argument("--batch", type=csv_arg(int), default=[4], help="comma-separated batch sizes")
    m.add_argument("--size", type=int, default=0, help="image size (default: each model's)")
    m.add_argument("--dtypes", type=csv_arg(), default=["fp32"], help="fp32, bf16")
    m.add_argument("--devices", type=csv_arg(), default=["all"], help="device counts, e.g. 1,2,all")
    m.add_argument("--per-device", action="store_true", help="batch sizes are per device")
    m.add_argument("--warmup", type=int, default=2)
    m.add_argument("--iters", type=int, default=5)
    m.add_argument("--torch", action="store_true", help="also time the PyTorch references")
    m.add_argument("--torch-compile", action="store_true", help="also torch.compile the references")
    m.add_argument("--override", type=overrides_arg, default={},
                   help="model config fields, e.g. scan_layers=false,attention=xla")
    outputs(m)
    m.set_defaults(func=cmd_models)

    k = sub.add_parser("compile", help="compile seconds of the real steps, layers scanned vs unrolled")
    k.add_argument("--models", type=csv_arg(), default=["clipseg"])
    k.add_argument("--variant", default="base")
    k.add_argument("--modes", type=csv_arg(), default=["frozen", "full"])
    k.add_argument("--batch", type=int, default=4)
    k.add_argument("--size", type=int, default=0)
    k.add_argument("--dtypes", type=csv_arg(), default=["fp32"])
    k.add_argument("--scan", type=csv_arg(), default=["false", "true"], help="scan_layers values to compare")
    outputs(k)
    k.set_defaults(func=cmd_compile)

    d = sub.add_parser("data", help="input pipeline examples/s (grain -> host -> device)")
    d.add_argument("--dataset", default="synthetic_polyp")
    d.add_argument("--data-dir", default=None, help="built datasets (default: build the synthetic set in a tmp dir)")
    d.add_argument("--preprocessing", default="clipseg")
    d.add_argument("--workers", type=csv_arg(int), default=[0, 2])
    d.add_argument("--batch", type=csv_arg(int), default=[16])
    d.add_argument("--batches", type=int, default=20)
    outputs(d)
    d.set_defaults(func=cmd_data)

    e = sub.add_parser("epoch", help="epoch time with/without the frozen-feature cache (synthetic set)")
    e.add_argument("--variant", default="base")
    e.add_argument("--train-size", type=int, default=800, help="synthetic training images")
    outputs(e)
    e.set_defaults(func=cmd_epoch)

    for name, module in DELEGATED.items():  # listed for --help; main() hands them their arguments
        sub.add_parser(name, help=f"options: python -m {module} --help", add_help=False)
    return p


def worker_parser() -> argparse.ArgumentParser:
    """The internal ``worker`` command (run_on_devices' child), kept out of ``--help``."""
    w = argparse.ArgumentParser(prog="medvlsm-bench worker")
    w.add_argument("spec")
    w.add_argument("rows_out")
    w.set_defaults(func=cmd_worker)
    return w


def main(argv: list[str] | None = None) -> int:
    """Console script ``medvlsm-bench``; exit code 0, or 2 with one line for a user error (see
    :mod:`medvlsm_jax.cli.common`)."""
    from medvlsm_jax.cli.common import guard  # noqa: PLC0415

    argv = sys.argv[1:] if argv is None else list(argv)

    def run() -> int:
        if argv and argv[0] == "worker":
            args = worker_parser().parse_args(argv[1:])
        elif argv and argv[0] in DELEGATED:
            result = importlib.import_module(DELEGATED[argv[0]]).main(argv[1:])
            return result if isinstance(result, int) else 0
        else:
            args = parser().parse_args(argv)
        args.func(args)
        return 0

    return guard("medvlsm-bench", run, argv)


if __name__ == "__main__":
    sys.exit(main())
