"""``medvlsm-convert cris SRC DST``: PyTorch CRIS / CLIP RN50 weights -> a converted CRIS folder.

Three sources are recognised from their content, with no separate step:

(a) a plain CRIS state dict (medvlsm's ``cris.pt``: ``backbone.* / neck.* / decoder.* / proj.*``);
(b) the original CRIS DataParallel training checkpoint
    (``{"state_dict": {"module.backbone...": ...}, "epoch": ...}``);
(c) an OpenAI CLIP RN50 archive (TorchScript, as ``torch.jit.load`` reads it; a plain CLIP state
    dict works too). It initialises only the backbone, exactly as CRIS's ``build_model`` does;
    ``backbone.visual.attnpool.connect`` (CRIS's addition), the neck, the decoder and the
    projector keep their fresh initialisation, and the report lists them. The archive stores its
    convolution/linear weights in fp16 already, which CRIS's ``build_model`` also rounds them to,
    so casting them to fp32 reproduces CRIS's backbone exactly.

The key map is short: drop ``module.``, split ``nn.MultiheadAttention``'s fused ``in_proj``, drop
``num_batches_tracked`` (and CLIP's ``input_resolution``/``context_length``/``vocab_size``
entries); everything else is :mod:`medvlsm_jax.conversion.rules`, strict. Pickles are always read with
``weights_only=True``; a TorchScript archive is read with ``torch.jit.load`` (no pickled objects).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import warnings
import zipfile
from collections.abc import Mapping

import numpy as np
from flax import nnx

from medvlsm_jax.data.preprocessing import make_tokenizer
from medvlsm_jax.models.cris import CRIS, CrisConfig
from medvlsm_jax.models.registry import get_spec
from medvlsm_jax.weights import TOKENIZER_DIR, save_model
from medvlsm_jax.conversion.rules import ConversionError, ConversionReport, convert_state_dict, split_fused_qkv, strip_prefix
from medvlsm_jax.conversion.torch_io import load_state_dict

__all__ = ["FORMATS", "convert", "detect_format", "key_map", "load_into", "read_checkpoint"]

FAMILY = "cris"
CRIS_STATE_DICT, DATAPARALLEL, CLIP_RN50 = "cris_state_dict", "cris_dataparallel", "clip_rn50"
FORMATS = (CRIS_STATE_DICT, DATAPARALLEL, CLIP_RN50)

_DROP = ("*.num_batches_tracked",)
_CLIP_META = ("input_resolution", "context_length", "vocab_size")
_CRIS_HEADS = ("neck.", "decoder.", "proj.")  # keys only a CRIS checkpoint has
# what a CLIP archive does not initialise (CRIS's build_model loads it with strict=False)
FRESH_WITH_CLIP = ("backbone.visual.attnpool.connect.*", "neck.*", "decoder.*", "proj.*")


def _is_torchscript(path: str) -> bool:
    """TorchScript archives are zips with a ``code/`` folder (torch.save zips have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.split("/", 1)[-1].startswith("code/") for name in z.namelist())


def _torchscript_state_dict(path: str) -> dict[str, np.ndarray]:
    import torch

    with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(path, map_location="cpu")
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in module.state_dict().items()}


def detect_format(sd: Mapping[str, np.ndarray], source: str = "checkpoint") -> str:
    """One of :data:`FORMATS` from the keys of a loaded state dict."""
    if sd and all(k.startswith("module.") for k in sd):
        return DATAPARALLEL
    if any(k.startswith(_CRIS_HEADS) for k in sd):
        return CRIS_STATE_DICT
    if "visual.attnpool.positional_embedding" in sd and "token_embedding.weight" in sd:
        return CLIP_RN50
    sample = ", ".join(sorted(sd)[:5])
    raise ConversionError(f"{source}: neither a CRIS checkpoint (keys backbone./neck./decoder./proj., "
                          f"optionally under module.) nor a CLIP RN50 state dict; first keys: {sample}")


def read_checkpoint(src: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """Reads ``src`` into ``(state dict, format)``; the format is detected, never asked for."""
    src = os.fspath(src)
    if not os.path.exists(src):
        raise FileNotFoundError(f"checkpoint not found: {src}")
    sd = _torchscript_state_dict(src) if _is_torchscript(src) else load_state_dict(src)
    return sd, detect_format(sd, src)


def key_map(sd: Mapping[str, np.ndarray], fmt: str) -> dict[str, np.ndarray]:
    """torch keys of format ``fmt`` -> the keys :func:`rules.convert_state_dict` expects."""
    if fmt == DATAPARALLEL:
        sd = strip_prefix(sd, "module.")
    elif fmt == CLIP_RN50:
        sd = {f"backbone.{k}": v for k, v in sd.items() if k not in _CLIP_META}
    return split_fused_qkv(sd)


def load_into(model: CRIS, sd: Mapping[str, np.ndarray], fmt: str, source: str = "checkpoint") -> ConversionReport:
    """Loads a state dict of format ``fmt`` into ``model`` in place (strict)."""
    clip = fmt == CLIP_RN50
    return convert_state_dict(model, key_map(sd, fmt), drop=_DROP,
                              allow_missing=FRESH_WITH_CLIP if clip else (), source=source)


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, variant: str = "base",
            init_from_clip: bool | None = None, seed: int = 0, **overrides) -> ConversionReport:
    """Converts ``src`` (any of :data:`FORMATS`) into the CRIS folder ``dst``.

    Args:
      src: checkpoint file (plain state dict, DataParallel checkpoint or CLIP RN50 archive).
      dst: output folder (``model.json``, Orbax ``params/``, ``tokenizer/``).
      variant: size of the model (``"base"`` = CLIP RN50 CRIS; ``"tiny"`` for tests).
      init_from_clip: None detects the source; True/False insist that it is / is not a CLIP
        archive (a mismatch is an error).
      seed: initialisation of what the source does not cover (CLIP sources only).
      **overrides: ``CrisConfig`` fields, e.g. ``pad_id=0`` for original-CRIS zero padding.

    Returns:
      the :class:`ConversionReport`; ``kept_init`` lists the freshly initialised tensors.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    sd, fmt = read_checkpoint(src)
    if init_from_clip is not None and init_from_clip != (fmt == CLIP_RN50):
        want = "a CLIP RN50 archive" if init_from_clip else "a CRIS checkpoint"
        raise ConversionError(f"{src}: expected {want}, found format {fmt!r}")
    config: CrisConfig = get_spec(FAMILY).config(variant, **overrides)
    model = CRIS(config, rngs=nnx.Rngs(seed))
    report = load_into(model, sd, fmt, src)
    fresh = [p[:-2] for p in FRESH_WITH_CLIP if any(fnmatch.fnmatchcase(k, p) for k in report.kept_init)]
    contract = get_spec(FAMILY).resolve_contract(config)
    save_model(dst, FAMILY, dataclasses.asdict(config), model,
               extra={"source": os.path.abspath(src), "source_format": fmt, "fresh_init": fresh,
                      "contract": contract.to_dict()})
    make_tokenizer(contract.text).save(os.path.join(dst, TOKENIZER_DIR))
    return report
