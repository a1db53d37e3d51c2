"""Shared structure of the run configs (``ml_collections.ConfigDict``) and the ``:key=value``
argument parser of ``get_config``.

Every field can be overridden on the command line: ``--config.train.lr=1e-4``. Model-family
files (``configs/clipseg.py``, ``configs/cris.py``) fill in the two recipes:

* ``paper`` — the paper's §3.4 hyper-parameters;
* ``released`` — the medvlsm release (``configs/model/*.yaml``, ``configs/experiment/*.yaml``,
  ``scripts/finetune.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_collections
from ml_collections import config_dict

ARG_KEYS = ("dataset", "prompt", "recipe", "variant", "loss", "image_size")


def parse_arg(arg: str | None, defaults: dict[str, str], extra_keys: tuple[str, ...] = ()) -> dict[str, str]:
    """``'dataset=kvasir_polyp,prompt=p3'`` -> dict over :data:`ARG_KEYS` (+ a config file's
    ``extra_keys``) with ``defaults``."""
    out = dict(defaults)
    keys = ARG_KEYS + tuple(extra_keys)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in keys:
            raise ValueError(f"config argument {item!r}: expected key=value with key in {', '.join(keys)}")
        out[key] = value.strip()
    return out


def base_config(model: str, args: dict[str, str]) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 42
    c.model = ml_collections.ConfigDict({
        "name": model,
        "variant": args["variant"],
        "overrides": ml_collections.ConfigDict(),  # fields of the family's config dataclass
        "init": "",  # converted/exported model folder to start from ("" = random init)
        "freeze_encoder": True,
    })
    c.data = ml_collections.ConfigDict({
        "dataset": args["dataset"],
        "prompt": args["prompt"],
        "prompt_override": config_dict.placeholder(str),
        "data_dir": "",
        "image_size": int(args.get("image_size") or 0),  # 0: the model's default resolution
        "mask_target": "soft",  # soft: the original's ToTensor mask values | binary: > 127.5 (builds < 2.0.0)
        "worker_count": 0,
    })
    c.train = ml_collections.ConfigDict({
        "recipe": args["recipe"],
        "optimizer": "adam",
        "lr": 1e-3,
        "lr_encoder": config_dict.placeholder(float),  # None: same as lr
        "weight_decay": 0.0,
        "batch_size": 16,
        "num_epochs": 1000,  # Lightning max_epochs
        "min_epochs": 10,
        "early_stopping_patience": 50,
        "early_stopping_min_delta": 1e-4,
        "grad_clip": 0.0,
        "schedule": "constant",
        "plateau_factor": 0.1,
        "plateau_patience": 5,
        "loss": args["loss"],
        "dice_weight": 1.0,
        "bce_weight": 0.2,
        "mixed_precision": False,
        "max_steps": 0,  # 0: no limit
        "checkpoint_every_steps": 0,  # 0: end of each epoch only
        "keep_checkpoints": 2,  # latest checkpoints kept (>= 2, so a damaged one has a fallback) + the best
        "log_every_steps": 10,
        # read losses back every N steps (1: each step waits for the device; 0: only at the end
        # of the epoch and before a checkpoint, so the host runs ahead of the device). A
        # non-finite loss is still caught, named by its step, before anything is saved
        "sync_every": 1,
        "progress": True,
        "cache": "auto",  # frozen-encoder feature cache: auto (on when frozen) | off | host | device
        "cache_max_gb": 8.0,
        # persistent XLA compilation cache (medvlsm_jax.train.compile_cache): a folder, "workdir"
        # (<workdir>/xla_cache) or "" (off); a rerun or resume then compiles nothing
        "compile_cache": "~/.cache/medvlsm-jax/xla",
    })
    c.eval = ml_collections.ConfigDict({
        "batch_size": 16,
        "threshold": -1.0,  # < 0: the family's default (CLIPSeg 0.5, CRIS 0.35)
        "resize": "nearest_mask",
        "gt_threshold": 0,  # ground truth = OpenCV grayscale > this (0: the original's; 127: builds < 2.0.0)
        "datasets": "",  # comma-separated test sets ("" = data.dataset)
        "write_masks": True,
        "hd95": True,
        "overlays": 0,
        "after_training": True,
    })
    return c


def recipe(c: ml_collections.ConfigDict, recipes: dict[str, Callable[[Any], None]]) -> ml_collections.ConfigDict:
    name = c.train.recipe
    if name not in recipes:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(recipes)}")
    recipes[name](c.train)
    return c


def config_dir() -> str:
    """The folder of the run configs: ``$MEDVLSM_CONFIG_DIR``, else ``configs/`` beside the package
    (a source checkout, where the configs live)."""
    import os  # noqa: PLC0415

    default = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    return os.environ.get("MEDVLSM_CONFIG_DIR", default)


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads a run config by file path, as ``ml_collections.config_flags`` does: ``spec`` is
    ``PATH[:ARG]`` or ``NAME[:ARG]`` (``NAME`` = a file of :func:`config_dir`, e.g.
    ``clipseg:dataset=busi``). Nothing is imported as a global ``configs`` package."""
    import importlib.util  # noqa: PLC0415
    import os  # noqa: PLC0415

    path, _, arg = spec.partition(":")
    if not path.endswith(".py"):
        path = os.path.join(config_dir(), path + ".py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found")
    module_spec = importlib.util.spec_from_file_location(f"_medvlsm_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)
