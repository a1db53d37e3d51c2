"""make_loader: batch contract, padding, prompts, pooled sets, sharding, determinism, resume."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from PIL import Image

from medvlsm_jax.data import make_loader, original_mask
from medvlsm_jax.data.errors import DataError
from medvlsm_jax.data.preprocessing import normalize, resize_image
from medvlsm_jax.models.contract import IMAGENET_MEAN, IMAGENET_STD, InputContract
from medvlsm_jax.models.registry import default_contract
from medvlsm_jax.data.registry import POOLED, get_spec
from medvlsm_jax.data.sources import build_dataset
from tests.data.layout import make_record, write_dataset

SIZES = {"train": 10, "val": 3, "test": 5}
# an image-only contract, small (256^2): fast; text models are covered below
MODEL = InputContract((256, 256), IMAGENET_MEAN, IMAGENET_STD, text=None)


class FakeTokenizer:
    """Deterministic stand-in: ids are the prompt's characters (keeps these tests independent
    of the BPE tokenizer, which has its own tests)."""

    def __call__(self, texts, max_length=77):
        ids = np.zeros((len(texts), max_length), np.int32)
        for i, t in enumerate(texts):
            codes = [ord(c) for c in t][:max_length]
            ids[i, :len(codes)] = codes
        return {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int32)}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    """Small builds of the pooled_all members (CAMUS without train, as released)."""
    root, data_dir = tmp_path_factory.mktemp("manual"), tmp_path_factory.mktemp("tfds")
    for d, name in enumerate(POOLED["pooled_all"]):
        spec = get_spec(name)
        anns = {f"{split}.json": [make_record(1000 * d + 100 * k + i, spec.num_prompts)
                                  for i in range(SIZES[split])]
                for k, split in enumerate(SIZES) if not (name == "camus" and split == "train")}
        write_dataset(root, name, anns, seed=d)
        build_dataset(name, manual_dir=root, data_dir=data_dir)
    return root, data_dir


def loader(data, dataset="kvasir_polyp", split="test", prompt="p1", batch_size=4, **kw):
    kw.setdefault("tokenizer", FakeTokenizer())
    contract = kw.pop("model", MODEL)
    contract = default_contract(contract) if isinstance(contract, str) else contract
    return make_loader(dataset, split, contract, prompt, batch_size,
                       data_dir=str(data[1]), **kw)


def collect(ld) -> list[dict]:
    return list(ld)


def test_eval_batches_contract_and_padding(data):
    ld = loader(data, model="clipseg")
    batches = collect(ld)
    assert (ld.num_examples, ld.steps_per_epoch, len(batches)) == (5, 2, 2)
    b = batches[0]
    assert b["pixel_values"].shape == (4, 352, 352, 3) and b["pixel_values"].dtype == np.float32
    assert b["mask"].shape == (4, 352, 352) and set(np.unique(b["mask"])) <= {0.0, 1.0}
    assert b["input_ids"].shape == b["attention_mask"].shape == (4, 77)
    assert b["input_ids"].dtype == b["attention_mask"].dtype == np.int32
    assert b["orig_size"].dtype == np.int32 and b["orig_size"].tolist()[0] == [24, 32]
    valid = np.concatenate([x["valid"] for x in batches])
    index = np.concatenate([x["index"] for x in batches])
    assert valid.tolist() == [True] * 5 + [False] * 3
    assert index[valid].tolist() == list(range(5)) and (index[~valid] == -1).all()
    assert (batches[1]["pixel_values"][1:] == 0).all()
    assert batches[0]["img_name"].tolist() == [f"{200 + i}.png" for i in range(4)]
    assert (b["dataset_id"] == get_spec("kvasir_polyp").dataset_id).all()


def test_pixels_and_original_mask_match_files(data):
    root = data[0] / "kvasir_polyp"
    b = next(iter(loader(data)))
    spec = MODEL
    img = Image.open(root / "images" / str(b["img_name"][2])).convert("RGB")
    np.testing.assert_array_equal(b["pixel_values"][2],
                                  normalize(resize_image(img, spec.image_size), spec.mean, spec.std))
    want = np.asarray(Image.open(root / "masks" / str(b["mask_name"][2]))) > 0
    got = original_mask("kvasir_polyp", "test", int(b["index"][2]), data_dir=str(data[1]))
    assert got.dtype == bool and got.shape == (24, 32)
    np.testing.assert_array_equal(got, want)


def test_train_deterministic_and_reshuffled_per_epoch(data):
    kw = dict(split="train", prompt="random", num_epochs=2, batch_size=5)
    a, b = collect(loader(data, **kw)), collect(loader(data, **kw))
    c = collect(loader(data, seed=7, **kw))
    assert len(a) == 4 and all(x["valid"].all() for x in a)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    order = [x["index"].tolist() for x in a]
    assert sorted(order[0] + order[1]) == sorted(order[2] + order[3]) == list(range(10))
    assert order[:2] != order[2:]  # reshuffled
    assert order != [x["index"].tolist() for x in c]


def test_mid_epoch_resume(data):
    ld = loader(data, split="train", prompt="p2", batch_size=3, num_epochs=3)
    full = collect(ld)
    it = iter(ld)
    for _ in range(4):
        next(it)
    state = it.get_state()
    rest = list(it)
    it2 = iter(loader(data, split="train", prompt="p2", batch_size=3, num_epochs=3))
    it2.set_state(state)
    resumed = list(it2)
    assert len(resumed) == len(rest) == len(full) - 4
    for x, y, z in zip(resumed, rest, full[4:]):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
            np.testing.assert_array_equal(x[key], z[key])


def test_list_prompt_drawn_per_example_per_epoch(data):
    # make_record: odd keys hold a string, even keys (p2, p4, ...) a list ["a.. i", "b.. i"]
    batches = collect(loader(data, split="train", prompt="p2", batch_size=10, num_epochs=4))
    by_epoch = [dict(zip(b["index"].tolist(), b["prompt"].tolist())) for b in batches]
    for choices in by_epoch:
        assert all(p in (f"a2 {i}", f"b2 {i}") for i, p in choices.items())
    assert len({tuple(sorted(e.items())) for e in by_epoch}) > 1
    first = [p.split()[0] for p in by_epoch[0].values()]
    assert {"a2", "b2"} <= set(first)
    fixed = collect(loader(data, split="train", prompt="p3", batch_size=10, num_epochs=2))
    assert fixed[0]["prompt"].tolist() == [f"prompt 3 of {i}" for i in fixed[0]["index"]]


def test_repeated_eval_loader_gives_the_same_draws_every_pass(data):
    # the trainer keeps one validation iterator for the run (repeat): a resumed run starts it
    # afresh, so every pass must be the first pass
    ld = loader(data, split="val", prompt="p2", batch_size=2, num_epochs=None)
    it = iter(ld)
    passes = [[next(it) for _ in range(ld.steps_per_epoch)] for _ in range(3)]
    once = collect(loader(data, split="val", prompt="p2", batch_size=2))
    for p in passes:
        assert [b["prompt"].tolist() for b in p] == [b["prompt"].tolist() for b in once]
        for b, o in zip(p, once):
            np.testing.assert_array_equal(b["pixel_values"], o["pixel_values"])


def test_random_prompt_on_pooled_all_uses_each_datasets_keys(data):
    batches = collect(loader(data, "pooled_all", "val", "random", batch_size=8))
    ids = np.concatenate([b["dataset_id"] for b in batches])
    prompts = np.concatenate([b["prompt"] for b in batches])
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.sum() == 3 * len(POOLED["pooled_all"])
    assert {get_spec(n).dataset_id for n in POOLED["pooled_all"]} == set(ids[valid].tolist())
    assert "" not in prompts[valid].tolist()  # p0 ("") is never drawn
    busi = get_spec("busi")
    for p in prompts[valid & (ids == busi.dataset_id)]:
        key = int(p.split()[1] if p.startswith("prompt") else p.split()[0][1:])
        assert 1 <= key < busi.num_prompts


def test_pooled_polyp_train_and_camus_without_train(data):
    ld = loader(data, "pooled_polyp", "train", "p1", batch_size=6)
    ids = np.concatenate([b["dataset_id"] for b in ld])
    assert ld.num_examples == 30 and len(ids) == 30
    assert sorted(set(ids.tolist())) == sorted(get_spec(n).dataset_id for n in POOLED["pooled_polyp"])
    pooled_all = loader(data, "pooled_all", "train", "p1", batch_size=6)
    assert pooled_all.num_examples == 10 * (len(POOLED["pooled_all"]) - 1)
    with pytest.raises(DataError, match="camus.*no 'train' split"):
        loader(data, "camus", "train")


def test_prompt_errors_and_overrides(data):
    with pytest.raises(DataError) as err:
        loader(data, "pooled_all", "val", "p9")
    assert "'busi' has no prompt 'p9'; its keys are p0, p1, p2, p3, p4, p5, p6;" in str(err.value)
    assert "'camus' has no prompt 'p9'; its keys are p0, p1, p2, p3, p4, p5, p6, p7" in str(err.value)
    assert "kvasir_polyp" not in str(err.value)
    with pytest.raises(DataError, match="prompt must be"):
        loader(data, prompt="free text")
    b = next(iter(loader(data, prompt="p3", prompt_override="a round polyp")))
    assert set(b["prompt"].tolist()) == {"a round polyp"}
    b = next(iter(loader(data, prompt="", model="clipseg")))
    assert set(b["prompt"].tolist()) == {""} and b["input_ids"].sum() == 0


def test_sharding_covers_split_once_with_equal_steps(data):
    shards = [loader(data, "pooled_polyp", "test", batch_size=4, shard_index=i, shard_count=2)
              for i in range(2)]
    assert shards[0].steps_per_epoch == shards[1].steps_per_epoch == 2
    seen = []
    for ld in shards:
        batches = collect(ld)
        assert len(batches) == ld.steps_per_epoch
        for b in batches:
            seen += [(d, i) for d, i, v in zip(b["dataset_id"], b["index"], b["valid"]) if v]
    assert len(seen) == len(set(seen)) == 15


def test_shards_read_their_rows_of_the_same_global_batches(data):
    """Two shards of 3 rows give exactly the single loader's batches of 6 (order, prompt draws,
    pixels), so training does not depend on the process count; a shard resumes mid-epoch."""
    kw = dict(dataset="pooled_polyp", split="train", prompt="random", num_epochs=2)
    whole = loader(data, batch_size=6, **kw)
    shards = [loader(data, batch_size=3, shard_index=i, shard_count=2, **kw) for i in range(2)]
    assert whole.steps_per_epoch == shards[0].steps_per_epoch == shards[1].steps_per_epoch == 5
    assert whole.num_steps == shards[0].num_steps == 10
    assert shards[0].num_examples + shards[1].num_examples == whole.num_examples == 30
    got = [collect(s) for s in shards]
    want = collect(whole)
    assert len(want) == len(got[0]) == len(got[1]) == 10
    for w, a, b in zip(want, *got):
        for key in w:
            np.testing.assert_array_equal(w[key], np.concatenate([a[key], b[key]]), err_msg=key)
    it = iter(shards[1])
    for _ in range(7):
        next(it)
    it2 = iter(loader(data, batch_size=3, shard_index=1, shard_count=2, **kw))
    it2.set_state(it.get_state())
    for x, y in zip(it2, got[1][7:]):
        np.testing.assert_array_equal(x["index"], y["index"])
        assert x["prompt"].tolist() == y["prompt"].tolist()


def test_worker_processes_match_in_process(data):
    kw = dict(split="train", prompt="random", batch_size=5, num_epochs=1)
    ref = collect(loader(data, **kw))
    got = collect(loader(data, worker_count=2, **kw))
    assert [b["index"].tolist() for b in got] == [b["index"].tolist() for b in ref]
    assert [b["prompt"].tolist() for b in got] == [b["prompt"].tolist() for b in ref]


def test_clip_tokenizer_in_batches(data):
    tokenizers = pytest.importorskip("medvlsm_jax.data.tokenizers")
    tok = tokenizers.ClipTokenizer.default()
    b = next(iter(make_loader("kvasir_polyp", "test", default_contract("clipseg"), "p1", 2, data_dir=str(data[1]))))
    want = tok([str(p) for p in b["prompt"]], max_length=77)
    np.testing.assert_array_equal(b["input_ids"], want["input_ids"])
    np.testing.assert_array_equal(b["attention_mask"], want["attention_mask"])
    assert b["input_ids"][0, 0] == 49406
