"""TFDS builders, one per dataset, sharing :class:`MedvlsmBuilder`."""

from __future__ import annotations

from medvlsm_jax.data.builders.base import MedvlsmBuilder
from medvlsm_jax.data.builders.bkai_polyp import BkaiPolyp
from medvlsm_jax.data.builders.busi import Busi
from medvlsm_jax.data.builders.camus import Camus
from medvlsm_jax.data.builders.chexlocalize import Chexlocalize
from medvlsm_jax.data.builders.clinicdb_polyp import ClinicdbPolyp
from medvlsm_jax.data.builders.colondb_polyp import ColondbPolyp
from medvlsm_jax.data.builders.cvc300_polyp import Cvc300Polyp
from medvlsm_jax.data.builders.dfu import Dfu
from medvlsm_jax.data.builders.etis_polyp import EtisPolyp
from medvlsm_jax.data.builders.isic import Isic
from medvlsm_jax.data.builders.kvasir_polyp import KvasirPolyp
from medvlsm_jax.data.builders.synthetic_polyp import SyntheticPolyp
from medvlsm_jax.data.builders.synthetic_us import SyntheticUs
from medvlsm_jax.data.errors import DataError
from medvlsm_jax.data.registry import DATASETS

BUILDERS: dict[str, type[MedvlsmBuilder]] = {
    cls.name: cls
    for cls in (KvasirPolyp, ClinicdbPolyp, BkaiPolyp, EtisPolyp, ColondbPolyp, Cvc300Polyp,
                Isic, Dfu, Camus, Busi, Chexlocalize, SyntheticPolyp, SyntheticUs)
}
assert tuple(BUILDERS) == DATASETS, "builders and registry disagree"


def builder_class(name: str) -> type[MedvlsmBuilder]:
    """The builder class of a dataset; unknown names raise a DataError listing the known ones."""
    if name not in BUILDERS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(BUILDERS)}")
    return BUILDERS[name]


__all__ = ["BUILDERS", "MedvlsmBuilder", "builder_class", *(c.__name__ for c in BUILDERS.values())]
