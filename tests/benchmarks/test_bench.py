"""``medvlsm-bench`` on the tiny models: valid JSON/markdown with the expected fields, the PyTorch
side-by-side ratio, device-count scaling with 2 simulated CPU devices, gpu_check.sh's syntax and
dry run, and the harness's peak table / ratio bookkeeping / PIL plots."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import types

import pytest

from medvlsm_jax.bench import bench, curves, harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--models", "clipseg", "--variant", "tiny", "--size", "32", "--iters", "1", "--warmup", "0"]
TIMING = ("median_s", "min_s", "max_s", "spread", "img_per_s", "compile_s", "gflops_per_img", "tflops_per_s",
          "mfu", "peak_tflops", "xla_bytes_per_device")


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def _load(out_dir: str, name: str) -> tuple[dict, str]:
    (folder,) = glob.glob(os.path.join(out_dir, "*_cpu"))
    with open(os.path.join(folder, f"{name}.json")) as f, open(os.path.join(folder, f"{name}.md")) as g:
        return json.load(f), g.read()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bench"))
    torch_flag = ["--torch"] if _has_torch() else []
    bench.main(["models", *TINY, "--batch", "2", "--modes", "inference,frozen", "--dtypes", "fp32,bf16",
                "--out", out, *torch_flag])
    return _load(out, "models")


def test_models_json_has_every_figure(tiny_run):
    result, _ = tiny_run
    assert result["env"]["backend"] == "cpu" and result["device_counts"] == [1]
    assert set(result["peaks"]) == {"float32", "bfloat16"}
    assert all(p["tflops_per_device"] > 0 for p in result["peaks"].values())
    flax = [r for r in result["rows"] if r["impl"] == "flax"]
    assert {(r["mode"], r["dtype"]) for r in flax} == {(m, d) for m in ("inference", "frozen")
                                                       for d in ("float32", "bfloat16")}
    for r in flax:
        assert "error" not in r, r
        for k in TIMING:
            assert r[k] is not None and r[k] >= 0, (k, r)
        assert r["img_per_s"] == pytest.approx(r["batch"] / r["median_s"])
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        assert 0 < r["mfu"] < 1 and r["steps"] == 1 and r["batch"] == 2 and r["size"] == 32
    train = [r for r in flax if r["mode"] == "frozen"]
    assert all(r["train"]["optimizer"] == "adamw" and r["train"]["loss"] == "paper_faithful" for r in train)
    # the frozen step (encode + decoder train step) costs more FLOPs than the forward alone
    fwd = {r["dtype"]: r["gflops_per_img"] for r in flax if r["mode"] == "inference"}
    assert all(r["gflops_per_img"] > fwd[r["dtype"]] for r in train)


def test_markdown_table_lists_every_row(tiny_run):
    result, md = tiny_run
    assert md.startswith("# models: cpu")
    table = [line for line in md.splitlines() if line.startswith("| clipseg")]
    assert len(table) == len(result["rows"])


@pytest.mark.torch
@pytest.mark.skipif(not _has_torch(), reason="needs the torch extra")
def test_pytorch_rows_and_ratios(tiny_run):
    result, _ = tiny_run
    ref = {(r["mode"], r["impl"]): r for r in result["rows"] if r["impl"] != "flax"}
    assert set(ref) == {("inference", "torch"), ("inference", "torch-amp"), ("frozen", "torch"),
                        ("frozen", "torch-amp")}
    assert all(r["img_per_s"] > 0 and r["first_step_s"] > 0 for r in ref.values())
    for r in (r for r in result["rows"] if r["impl"] == "flax"):
        impl = "torch-amp" if r["dtype"] == "bfloat16" else "torch"
        assert r[f"vs_{impl}"] == pytest.approx(r["img_per_s"] / ref[(r["mode"], impl)]["img_per_s"])


def _has(*modules: str) -> bool:
    try:
        for m in modules:
            __import__(m)
    except ImportError:
        return False
    return True


def test_make_batch_follows_the_contract():
    """Inputs come from each model's resolved contract: CLIP BPE 77 tokens at 352² (CLIPSeg),
    BERT WordPiece 256 tokens at 224² (BiomedCLIPSeg), pixels only for the image-only CNNs."""
    clip = bench.model_batch("clipseg", "tiny", 2)
    assert clip["pixel_values"].shape == (2, 352, 352, 3) and clip["input_ids"].shape == (2, 77)
    assert (clip["input_ids"][:, 0] == bench.CLIP_BOS).all() and (clip["input_ids"][:, 6:] == bench.CLIP_EOS).all()
    bert = bench.model_batch("biomedclipseg", "tiny", 2)
    assert bert["pixel_values"].shape == (2, 224, 224, 3) and bert["input_ids"].shape == (2, 256)
    ids, mask = bert["input_ids"], bert["attention_mask"]
    assert (ids[:, 0] == bench.BERT_CLS).all() and (ids[:, 6] == bench.BERT_SEP).all() and (ids[:, 7:] == 0).all()
    assert (mask.sum(1) == 7).all() and ((ids[:, 1:6] >= bench.BERT_FIRST_WORD) & (ids[:, 1:6] < 30522)).all()
    cnn = bench.model_batch("unet", "tiny", 2, size=64)
    assert set(cnn) == {"pixel_values", "mask"} and cnn["pixel_values"].shape == (2, 64, 64, 3)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """Tiny BiomedCLIPSeg (its contract's 224², inference + frozen) and tiny Unet (64², inference +
    frozen + full), Flax and PyTorch, one iteration each."""
    out = str(tmp_path_factory.mktemp("bench_refs"))
    common = ["--variant", "tiny", "--batch", "2", "--iters", "1", "--warmup", "0", "--dtypes", "fp32", "--torch",
              "--out", out]
    bench.main(["models", "--models", "biomedclipseg", "--modes", "inference,frozen", "--name", "biomed", *common])
    bench.main(["models", "--models", "unet", "--size", "64", "--modes", "inference,frozen,full", "--name", "cnn",
                *common])
    return _load(out, "biomed")[0]["rows"] + _load(out, "cnn")[0]["rows"]


@pytest.mark.torch
@pytest.mark.skipif(not _has("torch", "transformers", "open_clip", "timm", "segmentation_models_pytorch"),
                    reason="needs the torch extra with open_clip, timm and segmentation_models_pytorch")
def test_biomedclipseg_and_cnn_rows_side_by_side(reference_run):
    rows = {(r["model"], r["mode"], r["impl"]): r for r in reference_run}
    measured = [("biomedclipseg", "inference"), ("biomedclipseg", "frozen"), ("unet", "inference"), ("unet", "full")]
    for model, mode in measured:
        flax, ref = rows[(model, mode, "flax")], rows[(model, mode, "torch")]
        assert "error" not in flax and "error" not in ref, (flax, ref)
        assert flax["img_per_s"] > 0 and ref["img_per_s"] > 0
        assert flax["vs_torch"] == pytest.approx(flax["img_per_s"] / ref["img_per_s"])
        # both sides were fed the same contract-shaped batch (+ masks for a train step)
        assert flax["inputs"] == ref["inputs"], (flax["inputs"], ref["inputs"])
    text = {"pixel_values": [2, 224, 224, 3], "input_ids": [2, 256], "attention_mask": [2, 256]}
    assert rows[("biomedclipseg", "inference", "flax")]["inputs"] == text
    assert rows[("biomedclipseg", "frozen", "torch")]["inputs"] == {**text, "mask": [2, 224, 224]}
    assert rows[("unet", "inference", "torch")]["inputs"] == {"pixel_values": [2, 64, 64, 3]}  # no input_ids
    assert rows[("unet", "full", "flax")]["inputs"] == {"pixel_values": [2, 64, 64, 3], "mask": [2, 64, 64]}
    # the medvlsm recipes on the Flax side: BiomedCLIPSeg released (AdamW, soft Dice), CNNs Adam + tuned Dice
    assert rows[("biomedclipseg", "frozen", "flax")]["train"] == {
        "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-3, "grad_clip": 0.5, "loss": "paper_faithful"}
    assert rows[("unet", "full", "flax")]["train"] == {
        "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "grad_clip": 0.5, "loss": "tuned_dice"}
    # CNNs train whole: no frozen rows, on either side, with the reason
    for impl in ("flax", "torch"):
        assert "trains whole" in rows[("unet", "frozen", impl)]["skipped"]


def test_device_scaling_with_two_simulated_devices(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "medvlsm_jax.bench.bench", "models", *TINY, "--batch", "4", "--modes", "inference",
           "--devices", "1,all", "--out", str(tmp_path)]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    result, _ = _load(str(tmp_path), "models")
    assert result["env"]["device_count"] == 2 and result["device_counts"] == [1, 2]
    one, two = result["rows"]
    assert (one["devices"], two["devices"]) == (1, 2)
    # FLOPs are per device in XLA's SPMD cost analysis: the harness sums them over the devices
    assert two["gflops_per_img"] == pytest.approx(one["gflops_per_img"], rel=0.05)
    assert two["scaling"] == pytest.approx(two["img_per_s"] / (2 * one["img_per_s"]))
    assert two["scaling_kind"] == "strong" and "scaling" not in one
    # the child used the parent's measured CPU peak, so MFU is comparable across device counts
    assert one["peak_tflops"] == pytest.approx(two["peak_tflops"])


def test_gpu_check_scripts_parse():
    for script in ("gpu_check.sh", "fetch_wheels.sh"):
        subprocess.run(["bash", "-n", os.path.join(ROOT, "benchmarks", script)], check=True)
    bad = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--only", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown row nope" in bad.stderr


def test_gpu_check_rows_are_the_suite_rows(tmp_path):
    from medvlsm_jax.bench import suite

    text = open(os.path.join(ROOT, "benchmarks", "gpu_check.sh")).read()
    listed = text.split("ROWS=(", 1)[1].split(")", 1)[0].split()
    assert listed == [r.name for r in suite.rows_for(suite.GPU, str(tmp_path), str(tmp_path), dry=False)]
    assert listed[:2] == ["frozen-bf16", "full-bf16"]  # the bf16 train steps vs PyTorch AMP first


def _wheel(folder, dist, version, module):
    """A minimal pure-Python wheel of ``dist`` holding ``module.py``."""
    import zipfile

    path = os.path.join(folder, f"{dist}-{version}-py3-none-any.whl")
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{module}.py", "PROBE = 1\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.mark.skipif(not _has_torch(), reason="the dry run imports torch as the GPU run does")
def test_gpu_check_dry_run_on_cpu(tmp_path):
    import tarfile

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(str(wheels), "gpucheck_probe", "1.0", "gpucheck_probe")  # missing here: installed
    _wheel(str(wheels), "numpy", "0.0.1", "numpy_impostor")  # numpy is installed: skipped
    archive = tmp_path / "w.tar.xz"
    with tarfile.open(archive, "w:xz") as t:
        t.add(wheels, arcname=".")
    site, out = tmp_path / "site", tmp_path / "out"
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--dry-run", "--only",
                           "frozen-bf16", "--python", sys.executable, "--wheels", str(archive), "--site", str(site),
                           "--out", str(tmp_path / "results")],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "OUT": str(out)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "installing 1 missing distributions" in proc.stdout
    assert (site / "gpucheck_probe.py").exists() and not (site / "numpy_impostor.py").exists()
    assert "| clipseg | frozen | flax | bfloat16 |" in proc.stdout and "| clipseg | frozen | torch-amp |" in proc.stdout
    with tarfile.open(out / "gpu_check.tar.gz") as t:
        names = t.getnames()
    assert any(n.endswith("suite.md") for n in names) and any(n.endswith("suite_rows.jsonl") for n in names)
    assert (out / "suite.md").exists()


def test_peak_table_lookup():
    def dev(kind, platform="gpu"):
        return types.SimpleNamespace(device_kind=kind, platform=platform)

    assert harness.peak_flops("bfloat16", dev("NVIDIA H100 80GB HBM3"))[0] == 989.4e12
    assert harness.peak_flops("float32", dev("NVIDIA H100 PCIe"))[0] == 378.0e12  # TF32
    assert harness.peak_flops("bfloat16", dev("NVIDIA H200"))[0] == harness.PEAK_FLOPS["H100 SXM"]["bfloat16"]
    assert harness.peak_flops("float32", dev("NVIDIA A100-SXM4-80GB"))[0] == 156.0e12
    value, why = harness.peak_flops("bfloat16", dev("Tesla T4"))
    assert value is None and "Tesla T4" in why


def test_ratios_match_model_mode_dtype_and_batch():
    base = {"model": "m", "variant": "v", "mode": "frozen", "dtype": "float32", "size": 8}
    rows = [{**base, "impl": "flax", "batch": 4, "devices": 1, "img_per_s": 30.0},
            {**base, "impl": "flax", "batch": 8, "devices": 2, "img_per_s": 90.0},
            {**base, "impl": "flax", "batch": 4, "devices": 1, "dtype": "bfloat16", "img_per_s": 50.0},
            {**base, "impl": "torch", "batch": 4, "devices": 1, "img_per_s": 10.0},
            {**base, "impl": "torch", "batch": 8, "devices": 1, "img_per_s": 99.0},
            {**base, "impl": "flax", "batch": 4, "devices": 1, "mode": "full", "error": "OOM"}]
    bench.add_ratios(rows)
    assert rows[0]["vs_torch"] == pytest.approx(3.0)
    assert rows[1]["scaling"] == pytest.approx(90.0 / (2 * 30.0)) and rows[1]["scaling_kind"] == "weak"
    assert "vs_torch" not in rows[1] and "vs_torch" not in rows[2] and "vs_torch" not in rows[5]


def test_line_plot_writes_png(tmp_path):
    rows = [{"impl": "flax", "mode": "inference", "dtype": "float32", "batch": b, "img_per_s": 10.0 * b}
            for b in (1, 2, 4)] + [{"impl": "torch", "mode": "inference", "dtype": "float32", "batch": 2,
                                    "error": "boom"}]
    series = curves.series_of(rows, "batch")
    assert series == {"flax inference float32": [(1, 10.0), (2, 20.0), (4, 40.0)]}
    path = curves.line_plot(series, "t", "batch", "img/s", str(tmp_path / "p.png"), log2_x=True)
    from PIL import Image

    with Image.open(path) as img:
        assert img.size == (720, 440) and len(img.getcolors(10000)) > 3


def test_help_lists_only_public_commands():
    from medvlsm_jax.bench import bench

    text = bench.parser().format_help()
    assert "SUPPRESS" not in text and "worker " not in text
    assert "{models,compile,data,epoch,curves,processes,headline,suite}" in text
    args = bench.worker_parser().parse_args(["{}", "rows.json"])  # the internal command still parses
    assert args.rows_out == "rows.json" and args.func is bench.cmd_worker
