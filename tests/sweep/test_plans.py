"""Plan expansion: the paper's grid, run identity and deduplication, families joining by name."""

from __future__ import annotations

import os
import shutil

import pytest

from medvlsm_jax.config import config_dir
from medvlsm_jax.data.catalogue import PAPER_DATASETS, SPECS
from medvlsm_jax.sweep import plans


def _expand(plan, tmp_path, **kw):
    return plans.expand(plan, plans.PlanOptions(workdir=str(tmp_path), **kw))


def test_zeroshot_plan_is_clipseg_and_cris_on_every_dataset_and_prompt(tmp_path):
    e = _expand("zeroshot", tmp_path)
    expected = {(m, d, p) for m in ("clipseg", "cris") for d in PAPER_DATASETS for p in SPECS[d].prompt_keys}
    got = {(r.model, e.configs[i].data.dataset, e.configs[i].data.prompt) for i, r in e.items()}
    assert got == expected and len(e.ids) == len(set(e.ids)) == len(expected)
    assert all(r.kind == "zeroshot" for r in e.runs) and not e.notes


def test_finetune_plan_covers_the_grid_and_notes_missing_families(tmp_path, monkeypatch):
    e = _expand("finetune", tmp_path, weights="/w")
    configs = [e.configs[i] for i in e.ids]
    by_model = {}
    for r, c in zip(e.runs, configs):
        by_model.setdefault(r.model, set()).add((c.data.dataset, c.data.prompt))
    for model in ("clipseg", "cris"):
        cells = by_model[model]
        assert {d for d, _ in cells} == set(plans.TRAIN_SETS) | {"pooled_polyp", "pooled_all"}
        assert {p for d, p in cells if d == "pooled_all"} == {"random"}
        assert {p for d, p in cells if d == "camus"} == {f"p{i}" for i in range(8)}
        assert len(cells) == sum(len(SPECS[d].prompt_keys) for d in plans.TRAIN_SETS) + 10 + 1
    assert all(c.model.init == f"/w/{r.model}" for r, c in zip(e.runs, configs))
    kvasir = next(c for c in configs if c.data.dataset == "kvasir_polyp")
    assert kvasir.eval.datasets.split(",") == list(plans.ENDOSCOPY_SIX)
    if not os.path.isfile(os.path.join(config_dir(), "biomedclipseg.py")):
        assert any("'biomedclipseg'" in n and "skipped" in n for n in e.notes) and e.skipped > 0


def test_a_family_joins_when_its_config_file_lands(tmp_path, monkeypatch):
    cfg = tmp_path / "configs"
    shutil.copytree(config_dir(), cfg)
    real = cfg / "cnn.py"
    text = real.read_text() if real.exists() else None
    real.unlink(missing_ok=True)
    monkeypatch.setenv("MEDVLSM_CONFIG_DIR", str(cfg))
    before = _expand("cnn", tmp_path)
    assert not before.runs and before.skipped == 3 * 10 and len(before.notes) == 3
    if text is None:
        pytest.skip("configs/cnn.py has not landed in this checkout")
    real.write_text(text)
    after = _expand("cnn", tmp_path, models=("unet",))
    assert {r.model for r in after.runs} == {"unet"} and not after.notes
    assert {after.configs[i].model.name for i in after.ids} == {"unet"}
    assert len(after.runs) == 10  # 8 sets + 2 pooled sets, no prompt axis


def test_ood_runs_are_the_finetune_runs_and_ids_are_stable(tmp_path):
    ft = _expand("finetune", tmp_path, datasets=plans.ENDOSCOPY_TRAIN)
    ood = _expand("ood", tmp_path)
    vlsm_ood = {i for i, r in ood.items() if r.model in ("clipseg", "cris")}
    assert vlsm_ood and vlsm_ood <= set(ft.ids)
    assert _expand("ood", tmp_path).ids == ood.ids  # deterministic
    # machine-local fields do not change a run's identity, experiment fields do
    assert _expand("ood", tmp_path, data_dir="/elsewhere").ids == ood.ids
    assert not set(_expand("ood", tmp_path, sets=("train.lr=0.01",)).ids) & set(ood.ids)
    frozen = _expand("frozen", tmp_path, models=("clipseg",), datasets=("busi",))
    finetune = _expand("finetune", tmp_path, models=("clipseg",), datasets=("busi",))
    assert frozen.ids == finetune.ids  # CLIPSeg's encoders are frozen in both: the same runs


def test_swap_plan_depends_on_its_finetune_runs(tmp_path):
    e = _expand("swap", tmp_path, models=("clipseg",), datasets=("kvasir_polyp", "busi"),
                swap_modes=("random_word", "other_value"))
    trains = {i for i, r in e.items() if r.kind == "train"}
    swaps = [r for r in e.runs if r.kind == "swap"]
    assert len(trains) == 2 and all(r.depends in trains for r in swaps)
    assert len(swaps) == 2 * (len(plans.SWAPS["polyp"][1]) + len(plans.SWAPS["busi"][1]))
    assert e.ids.index(swaps[0].depends) < e.ids.index(next(i for i, r in e.items() if r.kind == "swap"))


def test_smoke_plan_has_the_grid_shape(tmp_path):
    e = _expand("smoke", tmp_path)
    kinds = {r.kind for r in e.runs}
    assert kinds == {"zeroshot", "train", "swap"}
    assert {e.configs[i].data.data_dir for i in e.ids} == {plans.smoke_data_dir(str(tmp_path))}
    assert {e.configs[i].model.variant for i in e.ids} == {"tiny"}


def test_bad_plan_and_bad_override_fail_clearly(tmp_path):
    with pytest.raises(KeyError, match="unknown plan 'nope'"):
        _expand("nope", tmp_path)
    with pytest.raises(KeyError, match="no field 'train.nope'"):
        _expand("zeroshot", tmp_path, sets=("train.nope=1",), models=("clipseg",), datasets=("busi",))


@pytest.mark.parametrize("table", ["MODELS", "SMOKE_MODELS"])
def test_plan_entries_agree_with_the_model_registry(table):
    """A plan's zeroshot / text flags are the family's own (ModelSpec.zeroshot, its contract's text
    spec): the plans never schedule a zero-shot run the trainer refuses, nor prompts for a CNN."""
    from medvlsm_jax.config import load_config
    from medvlsm_jax.models import registry

    for name, entry in getattr(plans, table).items():
        c = load_config(f"{entry.config}:{entry.arg}" if entry.arg else entry.config)
        spec = registry.get_spec(c.model.name)
        assert entry.zeroshot == spec.zeroshot, name
        assert entry.text == (spec.resolve_contract(spec.config("tiny")).text is not None), name
