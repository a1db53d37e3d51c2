"""TFDS builders: one :class:`MedvlsmBuilder` subclass per catalogue entry, generated here.

Each class only sets ``name``; everything else (features, splits, layout, prompt keys,
synthetic generation) is read from the entry in :mod:`medvlsm_jax.data.catalogue` by the
shared builder. Generated classes (rather than one builder with ``BUILDER_CONFIGS``) keep
TFDS's on-disk layout ``<data_dir>/<name>/<version>`` and the registered TFDS names
(``tfds.builder("kvasir_polyp")``), so datasets built before keep loading.
"""

from __future__ import annotations

import types

from medvlsm_jax.data.builders.base import MedvlsmBuilder
from medvlsm_jax.data.catalogue import CATALOGUE, DatasetSpec
from medvlsm_jax.data.errors import DataError


def _make_builder(spec: DatasetSpec) -> type[MedvlsmBuilder]:
    """The registered TFDS builder class of one catalogue entry (e.g. ``KvasirPolyp``)."""
    doc = (f"{spec.title} in the medvlsm layout ({', '.join(spec.splits)}; prompts "
           f"p0..p{spec.num_prompts - 1}); see :mod:`medvlsm_jax.data.catalogue`.")
    body = {"name": spec.name, "__module__": __name__, "__qualname__": spec.class_name,
            "__doc__": doc}
    return types.new_class(spec.class_name, (MedvlsmBuilder,), exec_body=lambda ns: ns.update(body))


BUILDERS: dict[str, type[MedvlsmBuilder]] = {spec.name: _make_builder(spec) for spec in CATALOGUE}
# Module attributes too, so the classes pickle by reference (grain worker processes).
globals().update({cls.__name__: cls for cls in BUILDERS.values()})


def builder_class(name: str) -> type[MedvlsmBuilder]:
    """The builder class of a dataset; unknown names raise a DataError listing the known ones."""
    if name not in BUILDERS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(BUILDERS)}")
    return BUILDERS[name]


__all__ = ["BUILDERS", "MedvlsmBuilder", "builder_class", *(c.__name__ for c in BUILDERS.values())]
