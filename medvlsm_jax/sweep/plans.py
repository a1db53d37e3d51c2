"""The paper's experiment grid as named plans of runs.

A plan expands into :class:`RunSpec` entries: a model entry (a label, its config file under
``configs/`` and the config overrides that select it), a ``get_config`` argument
(``dataset=...,prompt=...``), dotted overrides and a kind:

* ``train`` — finetune, export the best model and test it (``medvlsm_jax.main --mode=train``);
* ``zeroshot`` — test ``model.init`` untrained;
* ``swap`` — test a finished ``train`` run (its ``depends``) with one attribute of its prompts
  swapped (Fig. 3; :mod:`medvlsm_jax.sweep.swap`).

The plans (``medvlsm-sweep PLAN``):

========== ==================================================================================
zeroshot   CLIPSeg and CRIS x the 11 datasets x their prompts (the released ``scripts/zss.py``)
finetune   the VLSMs x the 8 training sets, ``pooled_polyp`` (P0-P9) and ``pooled_all``
           (``random``), as ``scripts/finetune.py``; runs trained on an endoscopy set or a
           pooled set are tested on every set they cover (so ``ood`` reuses them)
frozen     appendix F.1: the VLSMs with frozen encoders x the 8 training sets x prompts
cnn        Table 3's CNN rows: U-Net, U-Net++, DeepLabv3+ x the 8 sets and the pooled sets
ood        Table 4: VLSMs and CNNs trained on Kvasir-SEG, ClinicDB or BKAI, tested on all six
           endoscopy sets
swap       Fig. 3: finetuned VLSMs tested with one prompt attribute swapped (the finetuning
           runs they need are part of the plan)
reports    appendix F.2 / Table 8: CLIPSeg and CRIS zero-shot and finetuned on the MIMIC-CXR
           lung subset with P0 (empty) and P1 (the radiology report)
smoke      the same grid shape on the synthetic sets with the tiny model variants: zero-shot,
           packed finetuning, a full CRIS finetune, out-of-distribution tests and swaps; a few
           minutes on CPU (it builds small synthetic sets under ``<workdir>/data`` first); CRIS
           trains with its backbone frozen there (a full CRIS finetune compiles for minutes on
           CPU)
========== ==================================================================================

Families join by name: a model entry whose config file does not exist yet (e.g.
``configs/biomedclipseg.py`` or ``configs/cnn.py`` before those families land) is skipped with a
counted note, never silently. A run's id is a readable slug plus a hash of what defines it (its
kind, its resolved config without machine-local fields, and for swaps the swap), so the same
experiment named by two plans (``finetune`` and ``ood``) is one run in the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from medvlsm_jax.config import config_dir, load_config
from medvlsm_jax.data.catalogue import PAPER_DATASETS, SPECS

KINDS = ("train", "zeroshot", "swap")

TRAIN_SETS = ("kvasir_polyp", "clinicdb_polyp", "bkai_polyp", "isic", "dfu", "camus", "busi", "chexlocalize")
ENDOSCOPY_TRAIN = ("kvasir_polyp", "clinicdb_polyp", "bkai_polyp")
ENDOSCOPY_SIX = ENDOSCOPY_TRAIN + ("etis_polyp", "colondb_polyp", "cvc300_polyp")
POOLED_EVAL = {"pooled_polyp": ENDOSCOPY_SIX, "pooled_all": PAPER_DATASETS}
POOLED_PROMPTS = {"pooled_polyp": None, "pooled_all": ("random",)}  # None: the member sets' P0-P9
REPORT_SETS = ("mimic_cxr_lung",)

#: Fig. 3: the prompt whose attributes are swapped, per prompt family, and its attributes.
SWAPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "polyp": ("p6", ("number", "size", "colour", "shape", "location")),
    "isic": ("p6", ("number", "size", "colour", "shape", "location")),
    "dfu": ("p6", ("number", "size", "colour", "shape", "location")),
    "busi": ("p6", ("number", "size", "shape", "tumor_type", "location")),
    "camus": ("p6", ("label", "chambers", "cycle", "sex", "age", "quality")),
    "chexlocalize": ("p4", ("label", "shape", "location", "view")),
}
SWAP_MODES = ("random_word", "other_value")

#: Config fields left out of a run's identity: where things are on this machine, not what runs.
LOCAL_FIELDS = ("data.data_dir", "data.worker_count", "train.progress", "train.log_every_steps")


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A model as plans name it: report label, config file (``configs/<config>.py``), extra
    ``get_config`` arguments and config overrides that select it."""

    label: str
    config: str
    arg: str = ""
    overrides: tuple[tuple[str, Any], ...] = ()
    text: bool = True  # takes a prompt (VLSM) or not (CNN)
    zeroshot: bool = False

    def config_exists(self) -> bool:
        path = self.config if self.config.endswith(".py") else os.path.join(config_dir(), self.config + ".py")
        return os.path.isfile(path)


MODELS: dict[str, ModelEntry] = {
    "clipseg": ModelEntry("clipseg", "clipseg", zeroshot=True),
    "cris": ModelEntry("cris", "cris", zeroshot=True),
    "biomedclipseg": ModelEntry("biomedclipseg", "biomedclipseg"),
    "biomedclipseg_d": ModelEntry("biomedclipseg_d", "biomedclipseg", overrides=(("model.variant", "d"),)),
    "unet": ModelEntry("unet", "cnn", "model=unet", text=False),
    "unetpp": ModelEntry("unetpp", "cnn", "model=unetpp", text=False),
    "deeplabv3plus": ModelEntry("deeplabv3plus", "cnn", "model=deeplabv3plus", text=False),
}
VLSMS = ("clipseg", "cris", "biomedclipseg", "biomedclipseg_d")
ZEROSHOT_MODELS = ("clipseg", "cris")
CNNS = ("unet", "unetpp", "deeplabv3plus")

#: The smoke plan's tiny models (same families, tiny variants, small inputs, two epochs).
_SMOKE_TRAIN = (("train.batch_size", 4), ("train.num_epochs", 2), ("train.min_epochs", 1),
                ("train.early_stopping_patience", 1), ("eval.batch_size", 4), ("eval.hd95", False),
                ("train.progress", False))
SMOKE_MODELS: dict[str, ModelEntry] = {
    "clipseg": ModelEntry("clipseg", "clipseg", "variant=tiny,image_size=32,loss=corrected", _SMOKE_TRAIN,
                          zeroshot=True),
    "cris": ModelEntry("cris", "cris", "variant=tiny,image_size=64", _SMOKE_TRAIN, zeroshot=True),
    **{name: dataclasses.replace(MODELS[name], arg=MODELS[name].arg + ",variant=tiny,image_size=32",
                                 overrides=MODELS[name].overrides + _SMOKE_TRAIN) for name in CNNS},
}
SMOKE_SETS = ("synthetic_polyp", "synthetic_us")
#: Split sizes and image size of the smoke plan's synthetic sets.
SMOKE_DATA = {"n_train": 8, "n_val": 4, "n_test": 4, "size": (48, 48)}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a plan (see the module doc)."""

    kind: str
    model: str  # ModelEntry label
    config: str  # config file name or path
    arg: str  # get_config argument
    overrides: tuple[tuple[str, Any], ...] = ()
    settings: tuple[str, ...] = ()  # the plans' names for it: finetune, frozen, cnn, ood, ...
    depends: str = ""  # id of the train run a swap evaluates
    swap: tuple[tuple[str, Any], ...] = ()  # prompt_key, attribute, mode, seed

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown run kind {self.kind!r}; choose from {', '.join(KINDS)}")

    def load(self) -> Any:
        """The run's config: ``get_config(arg)`` of its config file, then the overrides."""
        config = load_config(f"{self.config}:{self.arg}" if self.arg else self.config)
        for key, value in self.overrides:
            set_dotted(config, key, value)
        return config

    @property
    def swap_dict(self) -> dict[str, Any]:
        return dict(self.swap)

    @property
    def id(self) -> str:
        return run_id(self)


def set_dotted(config: Any, key: str, value: Any) -> None:
    """``config.a.b = value`` for ``key='a.b'``; unknown keys raise a KeyError naming them."""
    *path, leaf = key.split(".")
    node = config
    for part in path:
        if part not in node:
            raise KeyError(f"config has no field {key!r}")
        node = node[part]
    if leaf not in node and not (path and path[-1] == "overrides"):
        raise KeyError(f"config has no field {key!r}")
    node[leaf] = value


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON (numbers, booleans, quoted strings, lists) or else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _identity(spec: RunSpec, config: Any) -> dict[str, Any]:
    flat = _flatten(json.loads(config.to_json_best_effort()))
    for key in LOCAL_FIELDS:
        flat.pop(key, None)
    if flat.get("model.init"):
        flat["model.init"] = os.path.basename(os.path.normpath(flat["model.init"]))
    return {"kind": spec.kind, "config": flat, "swap": dict(spec.swap), "depends": spec.depends}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_id(spec: RunSpec, config: Any = None) -> str:
    """``<kind>-<model>-<dataset>-<prompt>[-<attribute>]-<hash>``."""
    config = config if config is not None else spec.load()
    digest = hashlib.sha1(json.dumps(_identity(spec, config), sort_keys=True, default=str).encode()).hexdigest()
    parts = [spec.kind, spec.model, config.data.dataset]
    if MODELS.get(spec.model, SMOKE_MODELS.get(spec.model, ModelEntry("", ""))).text:
        parts.append(config.data.prompt or "empty")
    if spec.swap:
        parts.append(f"{spec.swap_dict['attribute']}-{spec.swap_dict['mode']}")
    if config.seed != 42:
        parts.append(f"s{config.seed}")
    return "-".join(str(p).replace("/", "_") for p in parts) + "-" + digest[:10]


# --------------------------------------------------------------------------- options and plans


@dataclasses.dataclass(frozen=True)
class PlanOptions:
    """What a plan expansion depends on besides the plan's name (all part of ``--list``'s
    commands, so a listed command expands to the same runs).

    ``weights``: a folder of converted models, ``<weights>/<model label>`` (``medvlsm-convert``
    output), used as ``model.init``; ``sets``: ``key=value`` overrides for every run;
    ``models`` / ``datasets`` / ``prompts``: restrict the grid; ``seeds``: one run per seed.
    """

    workdir: str
    data_dir: str = ""
    weights: str = ""
    sets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (42,)
    swap_modes: tuple[str, ...] = ("random_word",)


@dataclasses.dataclass
class Expansion:
    """A plan's runs (unique, in execution order) and the notes about what it left out."""

    plan: str
    runs: list[RunSpec]
    ids: list[str]  # the runs' ids, in the same order
    configs: dict[str, Any]  # run id -> config
    notes: list[str]
    skipped: int = 0

    def items(self) -> list[tuple[str, RunSpec]]:
        return list(zip(self.ids, self.runs))


class _Builder:
    def __init__(self, plan: str, options: PlanOptions, models: dict[str, ModelEntry], setting: str):
        self.plan, self.o, self.models, self.setting = plan, options, models, setting
        self.runs: dict[str, RunSpec] = {}
        self.configs: dict[str, Any] = {}
        self.notes: list[str] = []
        self.missing: dict[str, int] = {}

    def _restricted(self, what: Iterable[str], allowed: Sequence[str]) -> list[str]:
        return [w for w in what if not allowed or w in allowed]

    def add(self, kind: str, model: str, dataset: str, prompt: str | None, *, overrides: Sequence[tuple[str, Any]] = (),
            eval_datasets: Sequence[str] = (), setting: str | None = None, depends: str = "",
            swap: Sequence[tuple[str, Any]] = ()) -> str | None:
        entry = self.models[model]
        if self.o.models and model not in self.o.models:
            return None
        if self.o.datasets and dataset not in self.o.datasets:
            return None
        if prompt is not None and self.o.prompts and prompt not in self.o.prompts:
            return None
        if not entry.config_exists():
            self.missing[model] = self.missing.get(model, 0) + len(self.o.seeds)
            return None
        arg = ",".join(filter(None, [entry.arg, f"dataset={dataset}", f"prompt={prompt}" if prompt is not None else ""]))
        over = list(entry.overrides) + list(overrides)
        if eval_datasets:
            over.append(("eval.datasets", ",".join(eval_datasets)))
        if self.o.weights and (kind == "zeroshot" or entry.text or os.path.isdir(os.path.join(self.o.weights, model))):
            over.append(("model.init", os.path.join(self.o.weights, model)))
        if self.o.data_dir:
            over.append(("data.data_dir", self.o.data_dir))
        for item in self.o.sets:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set {item!r}: expected key=value")
            over.append((key.strip(), parse_value(value.strip())))
        last = None
        for seed in self.o.seeds:
            seeded = over + ([("seed", seed)] if seed != 42 else [])
            spec = RunSpec(kind, model, entry.config, arg, tuple(seeded), (setting or self.setting,),
                           depends, tuple(swap))
            config = spec.load()
            rid = run_id(spec, config)
            if rid in self.runs:
                old = self.runs[rid]
                if spec.settings[0] not in old.settings:
                    self.runs[rid] = dataclasses.replace(old, settings=old.settings + spec.settings)
            else:
                self.runs[rid] = spec
                self.configs[rid] = config
            last = rid
        return last

    def expansion(self) -> Expansion:
        skipped = sum(self.missing.values())
        notes = list(self.notes)
        for model, n in sorted(self.missing.items()):
            notes.append(f"{n} run(s) of model {model!r} skipped: its config file "
                         f"{self.models[model].config}.py is not in {config_dir()} yet")
        return Expansion(self.plan, list(self.runs.values()), list(self.runs), self.configs, notes, skipped)


def prompt_keys(dataset: str) -> tuple[str, ...]:
    if dataset in POOLED_PROMPTS:
        fixed = POOLED_PROMPTS[dataset]
        return fixed if fixed is not None else SPECS["kvasir_polyp"].prompt_keys
    return SPECS[dataset].prompt_keys


def _finetune_grid(b: _Builder, models: Sequence[str], sets: Sequence[str], *, pooled: bool = True,
                   overrides: Sequence[tuple[str, Any]] = ()) -> None:
    for model in models:
        text = b.models[model].text
        for ds in list(sets) + (list(POOLED_EVAL) if pooled else []):
            evals = POOLED_EVAL.get(ds, ENDOSCOPY_SIX if ds in ENDOSCOPY_TRAIN else ())
            for p in (prompt_keys(ds) if text else (None,)):
                b.add("train", model, ds, p, overrides=overrides, eval_datasets=evals)


def _plan_zeroshot(b: _Builder) -> None:
    for model in ZEROSHOT_MODELS:
        for ds in PAPER_DATASETS:
            for p in prompt_keys(ds):
                b.add("zeroshot", model, ds, p)


def _plan_finetune(b: _Builder) -> None:
    _finetune_grid(b, VLSMS, TRAIN_SETS)


def _plan_frozen(b: _Builder) -> None:
    _finetune_grid(b, VLSMS, TRAIN_SETS, pooled=False, overrides=(("model.freeze_encoder", True),))


def _plan_cnn(b: _Builder) -> None:
    _finetune_grid(b, CNNS, TRAIN_SETS)


def _plan_ood(b: _Builder) -> None:
    _finetune_grid(b, VLSMS + CNNS, ENDOSCOPY_TRAIN, pooled=False)


def _swaps(b: _Builder, models: Sequence[str], sets: Sequence[str], swaps: dict[str, tuple[str, tuple[str, ...]]]
           ) -> None:
    for model in models:
        for ds in sets:
            key, attributes = swaps[SPECS[ds].prompt_family]
            evals = ENDOSCOPY_SIX if ds in ENDOSCOPY_TRAIN else ()
            dep = b.add("train", model, ds, key, eval_datasets=evals, setting="finetune")
            if dep is None:
                continue
            for attribute in attributes:
                for mode in b.o.swap_modes:
                    b.add("swap", model, ds, key, eval_datasets=evals, depends=dep,
                          swap=(("prompt_key", key), ("attribute", attribute), ("mode", mode), ("seed", 0)))


def _plan_swap(b: _Builder) -> None:
    _swaps(b, VLSMS, TRAIN_SETS, SWAPS)


def _plan_reports(b: _Builder) -> None:
    for model in ("clipseg", "cris", "biomedclipseg", "biomedclipseg_d"):
        for ds in REPORT_SETS:
            for p in prompt_keys(ds):
                if MODELS[model].zeroshot:
                    b.add("zeroshot", model, ds, p)
                b.add("train", model, ds, p)


def _plan_smoke(b: _Builder) -> None:
    for model in ("clipseg", "cris"):
        for ds in SMOKE_SETS:
            for p in ("p0", "p1"):
                b.add("zeroshot", model, ds, p, setting="zeroshot")
    for ds in SMOKE_SETS:  # packed: the tiny CLIPSeg's encoder is frozen
        evals = SMOKE_SETS if ds == "synthetic_polyp" else ()
        for p in ("p0", "p1", "p2"):
            b.add("train", "clipseg", ds, p, eval_datasets=evals, setting="finetune")
    for p in ("p1", "p2"):  # frozen backbone (appendix F.1's variant): packed, and compiles in seconds
        b.add("train", "cris", "synthetic_polyp", p, eval_datasets=SMOKE_SETS, setting="frozen",
              overrides=(("model.freeze_encoder", True),))
    # one CNN row (each CNN family compiles its own full-network step: the smoke plan keeps one)
    b.add("train", "unet", "synthetic_polyp", None, eval_datasets=SMOKE_SETS, setting="cnn")
    dep = b.add("train", "clipseg", "synthetic_polyp", "p2", eval_datasets=SMOKE_SETS, setting="finetune")
    for attribute in ("shape", "cls"):
        b.add("swap", "clipseg", "synthetic_polyp", "p2", eval_datasets=SMOKE_SETS, depends=dep or "",
              setting="swap", swap=(("prompt_key", "p2"), ("attribute", attribute), ("mode", "random_word"),
                                    ("seed", 0)))


#: Plan name -> (builder function, default setting label, model table).
PLANS: dict[str, tuple[Callable[[_Builder], None], str, dict[str, ModelEntry]]] = {
    "zeroshot": (_plan_zeroshot, "zeroshot", MODELS),
    "finetune": (_plan_finetune, "finetune", MODELS),
    "frozen": (_plan_frozen, "frozen", MODELS),
    "cnn": (_plan_cnn, "cnn", MODELS),
    "ood": (_plan_ood, "ood", MODELS),
    "swap": (_plan_swap, "swap", MODELS),
    "reports": (_plan_reports, "reports", MODELS),
    "smoke": (_plan_smoke, "smoke", SMOKE_MODELS),
}


def expand(plan: str, options: PlanOptions) -> Expansion:
    """The runs of ``plan`` under ``options`` (unknown plan names raise, listing the plans)."""
    if plan not in PLANS:
        raise KeyError(f"unknown plan {plan!r}; choose from {', '.join(PLANS)}")
    fn, setting, models = PLANS[plan]
    if plan == "smoke" and not options.data_dir:
        options = dataclasses.replace(options, data_dir=smoke_data_dir(options.workdir))
    builder = _Builder(plan, options, models, setting)
    fn(builder)
    return builder.expansion()


def smoke_data_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "data", "tfds")


def prepare_smoke_data(data_dir: str) -> list[str]:
    """Builds small synthetic sets (:data:`SMOKE_DATA`) into ``data_dir`` when absent; returns
    the names built."""
    from medvlsm_jax.data import sources  # noqa: PLC0415
    from medvlsm_jax.promptgen.synthetic import write_synthetic_dataset  # noqa: PLC0415

    built = []
    manual = os.path.join(os.path.dirname(os.path.abspath(data_dir)), "manual")
    for name in SMOKE_SETS:
        if sources.is_built(name, data_dir):
            continue
        if not os.path.isdir(os.path.join(manual, name, "anns")):
            write_synthetic_dataset(manual, name=name, seed=0, **SMOKE_DATA)
        sources.build_dataset(name, manual_dir=manual, data_dir=data_dir)
        built.append(name)
    return built
