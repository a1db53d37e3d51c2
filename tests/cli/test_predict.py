"""medvlsm-predict and Segmenter.predict on a converted tiny model and a generated image."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from medvlsm_jax import weights
from medvlsm_jax.api import load
from medvlsm_jax.cli import predict as predict_cli
from medvlsm_jax.data.tokenizers import ClipTokenizer
from medvlsm_jax.models import registry


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    dst = tmp_path_factory.mktemp("tiny_clipseg")
    spec = registry.get_spec("clipseg")
    cfg = spec.config("tiny")
    weights.save_model(str(dst), "clipseg", cfg.to_dict(), registry.build_model("clipseg", cfg, seed=0))
    ClipTokenizer.default().save(dst / weights.TOKENIZER_DIR)
    return dst


def _image(path, h=57, w=83):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_load_round_trips_parameters(tiny_folder):
    seg = load(tiny_folder)
    fresh = registry.build_model("clipseg", "tiny", seed=0)
    np.testing.assert_array_equal(np.asarray(seg.model.decoder.film_mul.kernel[...]),
                                  np.asarray(fresh.decoder.film_mul.kernel[...]))


def test_predict_returns_masks_at_original_size(tiny_folder, tmp_path):
    seg = load(tiny_folder)
    img = Image.open(_image(tmp_path / "a.png"))
    masks = seg.predict([img, np.asarray(img)[:40, :30]], ["polyp", "a large polyp"])
    assert [m.shape for m in masks] == [(57, 83), (40, 30)]
    assert all(m.dtype == bool for m in masks)
    # threshold semantics: 0 and 1 bracket every sigmoid value
    assert seg.predict(img, "polyp", threshold=-1.0).all() and not seg.predict(img, "polyp", threshold=1.0).any()
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        seg.predict([img, img], ["a", "b", "c"])


def test_predict_cli_writes_mask_and_overlay(tiny_folder, tmp_path, capsys):
    path = _image(tmp_path / "case 1.png")
    out = tmp_path / "out"
    assert predict_cli.main(["--checkpoint", str(tiny_folder), "--image", str(path), "--prompt", "polyp",
                             "--out", str(out)]) == 0
    mask = np.asarray(Image.open(out / "case 1_mask.png"))
    overlay = np.asarray(Image.open(out / "case 1_overlay.png"))
    assert mask.shape == (57, 83) and set(np.unique(mask)) <= {0, 255}
    assert overlay.shape == (57, 83, 3)
    assert "foreground pixels" in capsys.readouterr().out


def test_load_rejects_non_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.json is missing"):
        load(tmp_path)


# ------------------------------------------------------------------ a batch with bad inputs


def test_predict_processes_every_input_and_reports_the_bad_ones(tiny_folder, tmp_path, capsys):
    good = _image(tmp_path / "good.png")
    (tmp_path / "a").mkdir()
    twin = _image(tmp_path / "a" / "good.png", h=30, w=20)  # same file name, other folder
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    code = predict_cli.main(["--checkpoint", str(tiny_folder), "--image", str(missing), str(good), str(text),
                             str(truncated), str(twin), "--prompt", "polyp", "--out", str(out)])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out.count("foreground pixels") == 2  # the good ones after the bad ones too
    assert "3 of 5 inputs failed" in captured.err
    for path in (missing, text, truncated):
        assert f"  {path}: " in captured.err
    assert "Traceback" not in captured.err
    # unique outputs: the second good.png does not overwrite the first
    assert sorted(os.listdir(out)) == ["good-2_mask.png", "good-2_overlay.png", "good_mask.png", "good_overlay.png"]
    assert np.asarray(Image.open(out / "good-2_mask.png")).shape == (30, 20)
    assert np.asarray(Image.open(out / "good_mask.png")).shape == (57, 83)


def test_output_stems_stay_unique():
    assert predict_cli.output_stems(["a/x.png", "b/x.jpg", "x-2.png", "c/x.png"]) == ["x", "x-2", "x-2-2", "x-3"]


@pytest.mark.parametrize("value", ["2", "-1", "0", "1", "half"])
def test_threshold_outside_0_1_is_refused(tiny_folder, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as info:
        predict_cli.main(["--checkpoint", str(tiny_folder), "--image", "x.png", "--prompt", "p",
                          "--out", str(tmp_path), "--threshold", value])
    assert info.value.code == 2 and "--threshold" in capsys.readouterr().err


def test_workdir_is_accepted_long_prompts_warn_missing_folders_are_one_line(tiny_folder, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(tiny_folder, workdir / "export")
    image = str(_image(tmp_path / "a.png"))
    long_prompt = " ".join(["a"] * 100)  # one token per word
    assert predict_cli.main(["--checkpoint", str(workdir), "--image", image, "--prompt", long_prompt,
                             "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert f"using the exported model {workdir / 'export'}" in err
    assert "the prompt has 102 tokens (with start and end); the model reads 77" in err
    for checkpoint, expected in ((tmp_path / "nope", "does not exist"), (tmp_path, "holds no model.json")):
        assert predict_cli.main(["--checkpoint", str(checkpoint), "--image", image, "--prompt", "polyp",
                                 "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("medvlsm-predict: error: ") and expected in err
