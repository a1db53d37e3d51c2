"""``medvlsm-convert {unet,unetpp,deeplabv3plus} SRC DST``: segmentation_models_pytorch weights ->
a converted model folder (:mod:`medvlsm_jax.models.smp`).

Sources, recognised from their content:

(a) an SMP state dict (``encoder.* / decoder.* / segmentation_head.*``) in a torch pickle or
    ``.safetensors`` file;
(b) an SMP ``save_pretrained`` folder (``config.json`` + ``model.safetensors``); its
    ``_model_class`` must be the family's SMP class;
(c) a medvlsm Lightning checkpoint (``.ckpt``: ``{"state_dict": {"net.encoder...": ...},
    "hyper_parameters": ...}``). Lightning stores the loss and optimiser objects in it; they are
    read as inert placeholders (``torch.load(weights_only=True)`` with every non-tensor class the
    file names allow-listed as an empty stub — no code from the file runs) and discarded;
(d) a ResNet-50 ImageNet state dict, torchvision's or timm's (``conv1.weight``, ``layer1.0...``,
    ``fc.*``), also given explicitly with ``--encoder``: it initialises only the encoder, as SMP's
    ``encoder_weights="imagenet"`` does; the decoder and head keep a fresh, seeded SMP-style
    initialisation and the report lists them.

The key map: drop ``net.`` (Lightning), add ``encoder.`` (ResNet state dicts), drop
``num_batches_tracked`` and the classifier ``fc.*``; everything else is
:mod:`medvlsm_jax.conversion.rules`, strict: every missing, unexpected or mis-shaped key is listed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

import numpy as np
from flax import nnx

from medvlsm_jax.models.registry import get_spec
from medvlsm_jax.weights import save_model
from medvlsm_jax.conversion.rules import ConversionError, ConversionReport, convert_state_dict, strip_prefix
from medvlsm_jax.conversion.torch_io import load_state_dict

__all__ = ["FAMILIES", "FORMATS", "convert", "detect_format", "key_map", "load_into", "read_checkpoint"]

FAMILIES = {"unet": "Unet", "unetpp": "UnetPlusPlus", "deeplabv3plus": "DeepLabV3Plus"}  # -> SMP class
SMP_STATE_DICT, SAVE_PRETRAINED, LIGHTNING, RESNET = "smp_state_dict", "smp_save_pretrained", "lightning_ckpt", "resnet"
FORMATS = (SMP_STATE_DICT, SAVE_PRETRAINED, LIGHTNING, RESNET)

_DROP = ("*.num_batches_tracked",)
_DROP_RESNET = _DROP + ("encoder.fc.weight", "encoder.fc.bias")
_SMP_PARTS = ("encoder.", "decoder.", "segmentation_head.")
FRESH_WITH_ENCODER = ("decoder.*", "segmentation_head.*")


class _Inert:
    """Placeholder for a class a checkpoint pickles next to its tensors (loss, optimiser...)."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass


def _torch_load_inert(path: str):
    """``torch.load(weights_only=True)`` with the file's non-allow-listed globals as inert stubs."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - retried below, where the error is reported
        pass
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        stubs = [(type(name.rsplit(".", 1)[-1], (_Inert,), {}), name) for name in names]
        with torch.serialization.safe_globals(stubs):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"{path}: cannot be read as a torch checkpoint with weights_only=True: {e}") from e


def _to_numpy(obj: Mapping, path: str) -> dict[str, np.ndarray]:
    import torch

    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise ConversionError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        v = v.detach().cpu()
        out[k] = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
    return out


def _read_file(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".safetensors"):
        return load_state_dict(path)
    obj = _torch_load_inert(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return _to_numpy(obj, path)


def _read_folder(path: str, family: str) -> dict[str, np.ndarray]:
    config = os.path.join(path, "config.json")
    weights = [os.path.join(path, n) for n in ("model.safetensors", "pytorch_model.bin")
               if os.path.exists(os.path.join(path, n))]
    if not os.path.exists(config) or not weights:
        raise FileNotFoundError(f"{path}: not an SMP save_pretrained folder "
                                "(config.json and model.safetensors expected)")
    with open(config) as f:
        cls = json.load(f).get("_model_class")
    if cls is not None and cls != FAMILIES[family]:
        raise ConversionError(f"{config}: _model_class is {cls!r}, but {family!r} converts {FAMILIES[family]!r}")
    return _read_file(weights[0])


def detect_format(sd: Mapping[str, np.ndarray], source: str = "checkpoint") -> str:
    """One of :data:`FORMATS` (a folder is :data:`SAVE_PRETRAINED`, decided by the caller)."""
    if sd and all(k.startswith("net.") for k in sd):
        return LIGHTNING
    if any(k.startswith(_SMP_PARTS) for k in sd):
        return SMP_STATE_DICT
    if "conv1.weight" in sd and "layer1.0.conv1.weight" in sd:
        return RESNET
    sample = ", ".join(sorted(sd)[:5])
    raise ConversionError(f"{source}: neither an SMP checkpoint (keys encoder./decoder./segmentation_head., "
                          f"optionally under net.) nor a ResNet state dict (conv1., layer1. ...); first keys: {sample}")


def read_checkpoint(src: str | os.PathLike, family: str) -> tuple[dict[str, np.ndarray], str]:
    """Reads ``src`` into ``(state dict, format)``; the format is detected, never asked for."""
    src = os.fspath(src)
    if not os.path.exists(src):
        raise FileNotFoundError(f"checkpoint not found: {src}")
    if os.path.isdir(src):
        sd = _read_folder(src, family)
        fmt = detect_format(sd, src)
        if fmt != SMP_STATE_DICT:
            raise ConversionError(f"{src}: a save_pretrained folder must hold an SMP state dict, found {fmt!r}")
        return sd, SAVE_PRETRAINED
    sd = _read_file(src)
    return sd, detect_format(sd, src)


def key_map(sd: Mapping[str, np.ndarray], fmt: str) -> dict[str, np.ndarray]:
    """torch keys of format ``fmt`` -> the keys :func:`rules.convert_state_dict` expects."""
    if fmt == LIGHTNING:
        return strip_prefix(sd, "net.")
    if fmt == RESNET:
        return {f"encoder.{k}": v for k, v in sd.items()}
    return dict(sd)


def load_into(model: nnx.Module, sd: Mapping[str, np.ndarray], fmt: str,
              source: str = "checkpoint") -> ConversionReport:
    """Loads a state dict of format ``fmt`` into ``model`` in place (strict)."""
    resnet = fmt == RESNET
    return convert_state_dict(model, key_map(sd, fmt), drop=_DROP_RESNET if resnet else _DROP,
                              allow_missing=FRESH_WITH_ENCODER if resnet else (), source=source)


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, family: str, variant: str = "base",
            encoder_only: bool | None = None, seed: int = 0, **overrides) -> ConversionReport:
    """Converts ``src`` (any of :data:`FORMATS`) into a ``family`` folder ``dst``.

    Args:
      src: checkpoint file or ``save_pretrained`` folder.
      dst: output folder (``model.json`` and Orbax ``params/``).
      family: ``unet``, ``unetpp`` or ``deeplabv3plus``.
      variant: model size (``"base"`` = ResNet-50 as medvlsm; ``"tiny"`` for tests).
      encoder_only: None detects the source; True insists that it is a ResNet state dict
        (``--encoder``), False that it is a full SMP checkpoint.
      seed: initialisation of the decoder and head when only the encoder is given.
      **overrides: fields of the family's config dataclass.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown SMP family {family!r}; choose from {', '.join(FAMILIES)}")
    src, dst = os.fspath(src), os.fspath(dst)
    sd, fmt = read_checkpoint(src, family)
    if encoder_only is not None and encoder_only != (fmt == RESNET):
        want = "a ResNet-50 state dict (torchvision/timm)" if encoder_only else f"an SMP {FAMILIES[family]} checkpoint"
        raise ConversionError(f"{src}: expected {want}, found format {fmt!r}")
    spec = get_spec(family)
    config = spec.config(variant, **overrides)
    if fmt == RESNET:  # the decoder and head keep a real (seeded) initialisation
        model = spec.build(config, nnx.Rngs(seed))
    else:  # every leaf comes from the checkpoint (strict): no need to draw random weights
        model = nnx.eval_shape(lambda: spec.build(config, nnx.Rngs(seed)))
    report = load_into(model, sd, fmt, src)
    extra = {"source": os.path.abspath(src), "source_format": fmt}
    if fmt == RESNET:
        extra["fresh_init"] = ["decoder", "segmentation_head"]
        extra["seed"] = seed
    save_model(dst, family, dataclasses.asdict(config), model,
               extra={**extra, "contract": get_spec(family).resolve_contract(config).to_dict()})
    return report
