"""Model registry: one entry per family, chosen by name everywhere (configs, trainer, loader).

Each family module calls :func:`register` at import time. A family provides

* ``config_cls``: a frozen dataclass of every size (``from_dict``/``to_dict`` via dataclasses);
  named variants (``"base"`` — the released size — and ``"tiny"`` for tests) come from
  ``variants``;
* ``build(config, rngs) -> nnx.Module``; the module implements the segmentation contract:

  - ``__call__(**inputs) -> logits (B, H, W)``, called by keyword with the input contract's
    keys (``pixel_values`` NHWC, plus ``input_ids`` and ``attention_mask`` for text models);
  - ``encode(**inputs) -> pytree`` — the frozen encoders' outputs (the frozen-feature cache
    stores exactly this), and ``decode(features) -> logits``; ``__call__`` is
    ``decode(encode(...))``;
  - ``encoder_prefixes``: attribute names of the encoder submodules (frozen by default in the
    paper-faithful recipes, their own learning rate group otherwise).
* ``contract(config) -> InputContract``: the family's input contract (default size,
  normalisation, text spec; :mod:`medvlsm_jax.models.contract`), resolved for a run by
  :meth:`ModelSpec.resolve_contract`;
* the default binarisation ``threshold``, whether zero-shot evaluation is defined, and
  ``legacy_keys`` (config fields renamed or dropped since folders were first converted).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from flax import nnx

from medvlsm_jax.models.contract import InputContract, TextSpec

__all__ = ["InputContract", "TextSpec", "ModelSpec", "register", "get_spec", "build_model", "list_models", "config_from_dict",
           "default_contract"]

# family name -> module that registers it (imported lazily so `import medvlsm_jax` stays light)
_FAMILY_MODULES = {
    "clipseg": "medvlsm_jax.models.clipseg",
    "cris": "medvlsm_jax.models.cris",
    "biomedclipseg": "medvlsm_jax.models.biomedclipseg",
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
    contract: Callable[[Any], InputContract]
    threshold: float = 0.5
    zeroshot: bool = True
    legacy_keys: Mapping[str, str | None] = dataclasses.field(default_factory=dict)

    def resolve_contract(self, config: Any, image_size: int | Sequence[int] | None = None,
                         vocab: str | None = None) -> InputContract:
        """The one place a run's inputs are decided: the family's contract for ``config``, at
        ``image_size`` (the run's single override; ``int`` for square, falsy for the default),
        reading its vocabulary from the tokenizer folder ``vocab`` when given."""
        contract = self.contract(config).with_image_size(image_size)
        if vocab and contract.text is not None:
            contract = dataclasses.replace(contract, text=dataclasses.replace(contract.text, vocab=vocab))
        return contract

    def check_zeroshot(self) -> None:
        """Raises a clear error for a zero-shot request on a family that has no zero-shot model."""
        if not self.zeroshot:
            raise ValueError(f"zero-shot evaluation is not defined for {self.name!r}: its decoder was never "
                             "trained on its encoders' features; finetune it (--mode=train), then evaluate "
                             "that run (--mode=eval)")

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
    """Rebuilds a family's config dataclass from its JSON form (tuples restored). Fields renamed
    or dropped since a folder was written (the family's ``legacy_keys``) are translated, so model
    folders converted by earlier versions keep loading."""
    spec = get_spec(name)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    d = dict(d)
    for old, new in spec.legacy_keys.items():
        if old in d and old not in fields:
            value = d.pop(old)
            if new is not None and new not in d:
                d[new] = value
    unknown = sorted(set(d) - fields)
    if unknown:
        raise KeyError(f"config of model {name!r} has unknown keys {unknown}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
    return spec.config_cls(**kwargs)


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


def default_contract(name: str, variant: str = "base", image_size: int | Sequence[int] | None = None
                     ) -> InputContract:
    """The input contract of family ``name``'s ``variant`` (bundled vocabulary), e.g. for a loader
    outside a run."""
    spec = get_spec(name)
    return spec.resolve_contract(spec.config(variant), image_size)
