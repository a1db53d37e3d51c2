"""Masks as the original reads them, against the calls the original makes: torchvision's
``Resize(NEAREST_EXACT) + ToTensor()[:1]`` on ``Image.open(path)`` (training target) and
``cv2.imread(path, cv2.IMREAD_GRAYSCALE) > 0`` (``scripts/eval_metrics.py``'s ground truth)."""

from __future__ import annotations

import io
import pathlib
import struct

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from medvlsm_jax.data import io as data_io
from medvlsm_jax.data import masks
from medvlsm_jax.data.errors import DataError
from medvlsm_jax.models.contract import IMAGENET_MEAN, IMAGENET_STD, InputContract

IMAGE_ONLY = InputContract((256, 256), IMAGENET_MEAN, IMAGENET_STD, text=None)

JPEG_QUALITIES = (30, 50, 75, 90, 95, 100)
TARGET_SIZES = ((40, 48), (96, 128), (61, 53))  # (height, width): down, up, odd


def blob_mask(h: int, w: int, seed: int) -> np.ndarray:
    """uint8 0/255 mask with a few ellipses (edges for JPEG ringing to act on)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros((h, w), bool)
    for _ in range(3):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(5, max(6, min(h, w) // 2))
        m |= (yy - cy) ** 2 + ((xx - cx) * 1.3) ** 2 < r * r
    return m.astype(np.uint8) * 255


def jpeg_masks(tmp_path: pathlib.Path) -> list[pathlib.Path]:
    """JPEG masks at several qualities and chroma subsamplings: gray, RGB and colour-coded RGB
    (BKAI's masks are red/green)."""
    paths = []
    for k, q in enumerate(JPEG_QUALITIES):
        gray = blob_mask(70, 90, k)
        colour = np.stack([gray, blob_mask(70, 90, 100 + k), np.zeros_like(gray)], -1)
        for kind, arr in (("gray", gray), ("rgb", np.repeat(gray[..., None], 3, -1)), ("colour", colour)):
            for sub in ((0, 2) if arr.ndim == 3 else (0,)):
                path = tmp_path / f"{kind}_q{q}_s{sub}.jpg"
                Image.fromarray(arr).save(path, quality=q, subsampling=sub)
                paths.append(path)
    return paths


def png_masks(tmp_path: pathlib.Path) -> list[pathlib.Path]:
    """PNG masks in every mode the datasets could use, with and without gamma chunks."""
    rng = np.random.default_rng(0)
    gray = blob_mask(50, 60, 7)
    rgb = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    coded = np.stack([gray, blob_mask(50, 60, 8), gray // 2], -1)
    images = {
        "l": Image.fromarray(gray), "l01": Image.fromarray(gray // 255),
        "la": Image.fromarray(np.stack([gray, 255 - gray], -1), "LA"),
        "rgb": Image.fromarray(rgb), "rgba": Image.fromarray(np.concatenate([rgb, rgb[..., :1]], -1)),
        "coded": Image.fromarray(coded), "palette": Image.fromarray(rgb).quantize(40),
        "bw_palette": Image.fromarray(gray).convert("P"),
        "one_bit": Image.fromarray(gray > 0).convert("1"),
        "sixteen": Image.fromarray(rng.integers(0, 65536, (50, 60)).astype(np.uint16)),
    }
    chunks = {"": (), "_gamma": ((b"gAMA", struct.pack(">I", 45455)),), "_srgb": ((b"sRGB", b"\0"),),
              "_gamma07": ((b"gAMA", struct.pack(">I", 70000)),)}
    paths = []
    for name, img in images.items():
        for suffix, extra in chunks.items():
            if suffix and name not in ("rgb", "coded", "palette", "l"):
                continue
            info = PngImagePlugin.PngInfo()
            for chunk in extra:
                info.add(*chunk)
            path = tmp_path / f"{name}{suffix}.png"
            img.save(path, pnginfo=info)
            paths.append(path)
    return paths


# ----------------------------------------------------------------- scoring: OpenCV grayscale

def test_jpeg_masks_really_differ_between_the_two_decodings(tmp_path):
    """The premise: a JPEG mask's values are not binary, so > 127 is not > 0; and for a
    colour-coded mask (BKAI's red/green) the red band the original trains on is not the
    grayscale it scores against (for gray content saved as RGB JPEG, like Kvasir's, they agree)."""
    gray_path, colour_path = tmp_path / "g.jpg", tmp_path / "c.jpg"
    gray = blob_mask(70, 90, 1)
    Image.fromarray(np.repeat(gray[..., None], 3, -1)).save(gray_path, quality=75)
    Image.fromarray(np.stack([gray, blob_mask(70, 90, 2), 0 * gray], -1)).save(colour_path, quality=75)
    red, _ = masks.first_band(masks.open_mask(gray_path.read_bytes()))
    g = masks.opencv_gray(gray_path.read_bytes())
    np.testing.assert_array_equal(red, g)
    assert ((g > 0) != (g > 127)).sum() > 50 and len(np.unique(red)) > 2
    red, _ = masks.first_band(masks.open_mask(colour_path.read_bytes()))
    g = masks.opencv_gray(colour_path.read_bytes())
    assert ((red > 127) != (g > 0)).sum() > 500  # green-only polyps: ground truth, not trained on


def test_opencv_grayscale_is_cv2_imread_for_jpeg_and_png(tmp_path):
    cv2 = pytest.importorskip("cv2")
    for path in jpeg_masks(tmp_path) + png_masks(tmp_path):
        want = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        got = masks.opencv_gray(path.read_bytes())
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want, err_msg=path.name)
        for t in (0, 127):
            np.testing.assert_array_equal(masks.ground_truth(path.read_bytes(), t), want > t, err_msg=path.name)


def test_threshold_127_is_the_old_build_rule_on_gray_masks(tmp_path):
    for path in jpeg_masks(tmp_path):
        if path.name.startswith("gray"):
            np.testing.assert_array_equal(masks.ground_truth(path.read_bytes(), 127), data_io.read_mask(path))


# ----------------------------------------------------------------- training: ToTensor of the PIL mask

def _torchvision_target(path: pathlib.Path, size: tuple[int, int]) -> np.ndarray:
    T = pytest.importorskip("torchvision.transforms")
    tf = T.Compose([T.Resize(size=size, interpolation=T.InterpolationMode.NEAREST_EXACT), T.ToTensor()])
    return tf(Image.open(path))[:1][0].numpy()  # ImageTextMaskDataset.__getitem__


def test_soft_target_is_the_originals_totensor_values(tmp_path):
    pytest.importorskip("torch")
    paths = jpeg_masks(tmp_path) + [p for p in png_masks(tmp_path) if not p.name.startswith("sixteen")]
    soft_values = 0
    for path in paths:
        for size in TARGET_SIZES:
            want = _torchvision_target(path, size)
            got = masks.training_target(path.read_bytes(), size, "soft")
            assert got.dtype == np.float32 and got.shape == size
            np.testing.assert_array_equal(got, want, err_msg=f"{path.name} {size}")
            soft_values += int(((got > 0) & (got < 1)).sum())
    assert soft_values > 1000  # JPEG ringing reaches the training target


def test_sixteen_bit_masks_are_scaled_not_raw(tmp_path):
    """Documented divergence: ToTensor leaves 16-bit masks unscaled; we divide by 65535."""
    path = tmp_path / "m.png"
    Image.fromarray((blob_mask(30, 40, 3).astype(np.uint16) // 255) * 65535).save(path)
    want = np.asarray(Image.fromarray(blob_mask(30, 40, 3)).resize((23, 17), Image.Resampling.NEAREST)) / 255
    np.testing.assert_array_equal(masks.training_target(path.read_bytes(), (17, 23), "soft"), want)


def test_binary_target_is_the_old_build_rule(tmp_path):
    """``binary``: what builds < 2.0.0 stored (read_mask at > 127.5), resized the same way."""
    for path in jpeg_masks(tmp_path)[::3] + png_masks(tmp_path)[::2]:
        old = data_io.read_mask(path).astype(np.uint8)
        for size in TARGET_SIZES:
            want = np.asarray(Image.fromarray(old).resize(size[::-1], Image.Resampling.NEAREST)).astype(np.float32)
            np.testing.assert_array_equal(masks.training_target(path.read_bytes(), size, "binary"), want)
    with pytest.raises(DataError, match="unknown mask target"):
        masks.training_target(path.read_bytes(), (4, 4), "hard")


# ----------------------------------------------------------------- storage

def test_mask_bytes_are_lossless(tmp_path):
    for path in jpeg_masks(tmp_path)[:4] + png_masks(tmp_path)[:4]:
        data, hw = data_io.mask_bytes(path)
        assert data == path.read_bytes() and hw == Image.open(path).size[::-1]
    tif = tmp_path / "m.tif"
    Image.fromarray(blob_mask(20, 30, 2)).convert("P").save(tif)
    data, hw = data_io.mask_bytes(tif)
    assert Image.open(io.BytesIO(data)).format == "PNG" and hw == (20, 30)
    for size in ((20, 30), (10, 12)):
        np.testing.assert_array_equal(masks.training_target(data, size), masks.training_target(tif.read_bytes(), size))
    bad = tmp_path / "f.tif"
    Image.fromarray(np.zeros((4, 4), np.float32)).save(bad)
    with pytest.raises(DataError, match=r"f\.tif.*mode F"):
        data_io.mask_bytes(bad)


# ----------------------------------------------------------------- built dataset, end to end

@pytest.fixture(scope="module")
def jpeg_kvasir(tmp_path_factory):
    """A small Kvasir build whose masks are real JPEGs (quality 75), as Kvasir-SEG's are."""
    from medvlsm_jax.data.sources import build_dataset
    from tests.data.layout import SIZE, make_record, write_dataset

    root, data_dir = tmp_path_factory.mktemp("manual"), tmp_path_factory.mktemp("tfds")
    anns = {f"{s}.json": [make_record(10 * k + i, ext="jpg") for i in range(n)]
            for k, (s, n) in enumerate((("train", 7), ("val", 2), ("test", 3)))}
    ds = write_dataset(root, "kvasir_polyp", anns)
    for i, path in enumerate(sorted((ds / "masks").iterdir())):
        Image.fromarray(np.repeat(blob_mask(*SIZE, seed=i)[..., None], 3, -1)).save(path, "JPEG", quality=75)
    build_dataset("kvasir_polyp", manual_dir=root, data_dir=data_dir)
    return ds, str(data_dir)


def _loader(data_dir, split, **kw):
    from medvlsm_jax.data import make_loader
    from tests.data.test_pipeline import FakeTokenizer

    return make_loader("kvasir_polyp", split, IMAGE_ONLY, "p1", kw.pop("batch_size", 4), data_dir=data_dir,
                       tokenizer=FakeTokenizer(), **kw)


def test_pipeline_targets_and_ground_truth_from_jpeg_masks(jpeg_kvasir):
    from medvlsm_jax.data import original_mask

    ds, data_dir = jpeg_kvasir
    batch = next(iter(_loader(data_dir, "test")))
    soft = next(iter(_loader(data_dir, "test", mask_target="soft")))["mask"]
    binary = next(iter(_loader(data_dir, "test", mask_target="binary")))["mask"]
    np.testing.assert_array_equal(batch["mask"], soft)  # soft is the default
    assert ((soft > 0) & (soft < 1)).any() and set(np.unique(binary)) <= {0.0, 1.0}
    cv2 = pytest.importorskip("cv2")
    for r in range(3):
        path = ds / "masks" / str(batch["mask_name"][r])
        np.testing.assert_array_equal(original_mask("kvasir_polyp", "test", int(batch["index"][r]), data_dir),
                                      cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0)
        pytest.importorskip("torch")
        np.testing.assert_array_equal(soft[r], _torchvision_target(path, (256, 256)))


def test_train_keeps_the_last_partial_batch(jpeg_kvasir):
    _, data_dir = jpeg_kvasir
    ld = _loader(data_dir, "train", batch_size=3, num_epochs=2)
    batches = list(ld)
    assert ld.steps_per_epoch == 3 == len(batches) // 2  # ceil(7 / 3)
    for epoch in (batches[:3], batches[3:]):
        valid = np.concatenate([b["valid"] for b in epoch])
        index = np.concatenate([b["index"] for b in epoch])
        assert valid.tolist() == [True] * 7 + [False] * 2
        assert sorted(index[valid].tolist()) == list(range(7))
        assert not epoch[-1]["mask"][~epoch[-1]["valid"]].any()
    assert [b["index"].tolist() for b in batches[:3]] != [b["index"].tolist() for b in batches[3:]]


def test_old_build_asks_for_a_rebuild(jpeg_kvasir, tmp_path):
    import shutil

    from medvlsm_jax.data.builders import builder_class
    from medvlsm_jax.data.sources import load_builder

    _, data_dir = jpeg_kvasir
    version = str(builder_class("kvasir_polyp").VERSION)
    shutil.copytree(pathlib.Path(data_dir) / "kvasir_polyp" / version, tmp_path / "kvasir_polyp" / "1.0.0")
    with pytest.raises(DataError, match=r"built by an older medvlsm-jax \(builder version 1\.0\.0.*rebuild it: "
                                        r"medvlsm-data build kvasir_polyp"):
        load_builder("kvasir_polyp", tmp_path)
