"""Model registry: one entry per family, chosen by name everywhere (configs, trainer, loader).

Each family module calls :func:`register` at import time. A family provides

* ``config_cls``: a frozen dataclass of every size (``from_dict``/``to_dict`` via dataclasses);
  named variants (``"base"`` — the released size — and ``"tiny"`` for tests) come from
  ``variants``;
* ``build(config, rngs) -> nnx.Module``; the module implements the segmentation contract:

  - ``__call__(pixel_values NHWC, input_ids, attention_mask=None) -> logits (B, H, W)``
  - ``encode(pixel_values, input_ids, attention_mask=None) -> pytree`` — the frozen encoders'
    outputs (the frozen-feature cache stores exactly this), and ``decode(features) -> logits``;
    ``__call__`` is ``decode(encode(...))``.
  - ``encoder_prefixes``: attribute names of the encoder submodules (frozen by default in the
    paper-faithful recipes, their own learning rate group otherwise).
* ``preprocessing`` (key of :mod:`medvlsm_jax.data.preprocessing`), ``tokenizer`` kind and the
  default binarisation ``threshold``.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from flax import nnx

from medvlsm_jax.data.preprocessing import PreprocessSpec, get_preprocessing

__all__ = ["ModelSpec", "register", "get_spec", "build_model", "list_models", "config_from_dict"]

# family name -> module that registers it (imported lazily so `import medvlsm_jax` stays light)
_FAMILY_MODULES = {
    "clipseg": "medvlsm_jax.models.clipseg",
    "cris": "medvlsm_jax.models.cris",
    "unet": "medvlsm_jax.models.smp",
    "unetpp": "medvlsm_jax.models.smp",
    "deeplabv3plus": "medvlsm_jax.models.smp",
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    config_cls: type
    build: Callable[[Any, nnx.Rngs], nnx.Module]
    variants: dict[str, Callable[[], Any]]
    preprocessing: str
    tokenizer: str = "clip"
    threshold: float = 0.5

    def preprocessing_for(self, config: Any, image_size: int | tuple[int, int] | None = None) -> PreprocessSpec:
        """The family's input preprocessing for a given config: at ``image_size`` when given
        (``int`` for square), and padding tokens with the config's ``pad_id`` when the family's
        config has one (CRIS: 49407 as medvlsm, 0 as the original)."""
        spec = get_preprocessing(self.preprocessing)
        if image_size:
            size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
            spec = dataclasses.replace(spec, image_size=size)
        pad_id = getattr(config, "pad_id", None)
        if spec.text is not None and pad_id is not None:
            spec = dataclasses.replace(spec, text=dataclasses.replace(spec.text, pad_id=pad_id))
        return spec

    def config(self, variant: str = "base", **overrides) -> Any:
        if variant not in self.variants:
            raise KeyError(f"model {self.name!r} has no variant {variant!r}; choose from {sorted(self.variants)}")
        return dataclasses.replace(self.variants[variant](), **overrides)


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    return sorted(set(_FAMILY_MODULES) | set(_REGISTRY))


def get_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY and name in _FAMILY_MODULES:
        importlib.import_module(_FAMILY_MODULES[name])
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def config_from_dict(name: str, d: dict[str, Any]) -> Any:
    """Rebuilds a family's config dataclass from its JSON form (tuples restored)."""
    cls = get_spec(name).config_cls
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise KeyError(f"config of model {name!r} has unknown keys {unknown}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
    return cls(**kwargs)


def build_model(name: str, config: Any = "base", *, seed: int = 0, **overrides) -> nnx.Module:
    """Builds a randomly initialised model of family ``name`` from a config or a variant name."""
    spec = get_spec(name)
    if isinstance(config, str):
        config = spec.config(config, **overrides)
    elif isinstance(config, dict):
        config = config_from_dict(name, {**config, **overrides})
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    return spec.build(config, nnx.Rngs(seed))
