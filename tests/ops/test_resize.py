"""torch-exact resizing against torch.nn.functional.interpolate itself."""

import numpy as np
import pytest

from medvlsm_jax.ops.resize import interpolation_matrix, resize

torch = pytest.importorskip("torch")
F = torch.nn.functional

CASES = [
    ("bilinear", False), ("bilinear", True), ("bicubic", False), ("bicubic", True),
    ("nearest", False), ("nearest-exact", False),
]
SIZES = [(22, 22), (7, 9), (26, 26), (33, 17)]


@pytest.mark.parametrize("method,align_corners", CASES)
@pytest.mark.parametrize("size", SIZES)
def test_matches_torch_interpolate(method, align_corners, size):
    x = np.random.default_rng(0).normal(size=(2, 14, 14, 3)).astype(np.float32)
    kw = {"align_corners": align_corners} if method in ("bilinear", "bicubic") else {}
    ref = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=size, mode=method, **kw)
    out = np.asarray(resize(x, size, method=method, align_corners=align_corners))
    np.testing.assert_allclose(out, ref.permute(0, 2, 3, 1).numpy(), atol=2e-5, rtol=0)


def test_cubic_uses_torch_coefficient_not_jax_default():
    import jax

    x = np.random.default_rng(1).normal(size=(1, 14, 14, 1)).astype(np.float32)
    ours = np.asarray(resize(x, (22, 22), method="bicubic"))
    jax_default = np.asarray(jax.image.resize(x, (1, 22, 22, 1), "cubic"))
    assert np.abs(ours - jax_default).max() > 1e-3  # a=-0.5 vs a=-0.75 must differ


def test_identity_and_errors():
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)
    np.testing.assert_array_equal(np.asarray(resize(x, (3, 4), method="bicubic")), x)
    assert np.allclose(interpolation_matrix(5, 9, "bilinear").sum(1), 1)
    with pytest.raises(ValueError, match="unknown interpolation"):
        interpolation_matrix(3, 4, "lanczos")
    with pytest.raises(ValueError, match="differ in length"):
        resize(x, (3,), method="bilinear")


# ----------------------------------------------------------------- nearest: torch's index rounding

def _torch_nearest_indices(n_in: int, n_out: int, method: str, dtype: str, kernel: str) -> np.ndarray:
    """Source indices torch's CPU kernel picks along the width, read back from the values of an
    index ramp (uint8: low and high bytes in two channels). ``kernel='generic'``: an output
    whose height + width exceeds 128 keeps torch off its vectorised kernel; ``'vectorized'``:
    4 channels-last channels put it on it."""
    ramp = torch.arange(n_in)
    if dtype == "uint8":
        x = torch.stack([ramp % 256, ramp // 256]).to(torch.uint8)
    else:
        x = ramp.to(getattr(torch, dtype))[None]
    if kernel == "vectorized":
        x = torch.cat([x, x[:1].expand(4 - x.shape[0], -1)]) if x.shape[0] < 4 else x
        x = x[None, :, None].contiguous(memory_format=torch.channels_last)
        out_h = 1
    else:
        x, out_h = x[None, :, None], max(1, 129 - n_out)
    y = F.interpolate(x, size=(out_h, n_out), mode=method)[0, :, 0].to(torch.int64)
    return (y[0] + 256 * y[1]).numpy() if dtype == "uint8" else y[0].numpy()


def _exact_rational_rule(n_in: int, n_out: int) -> np.ndarray:
    """The rule before torch's rounding was reproduced: floor((i + 0.5) * in / out), exactly."""
    return np.minimum(((2 * np.arange(n_out) + 1) * n_in) // (2 * n_out), n_in - 1)


@pytest.mark.parametrize("n_in", [352, 416])
@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8"])
def test_nearest_exact_indices_match_torch_at_every_size(n_in, dtype):
    """Every output size 1..2000, both torch kernels, against F.interpolate itself."""
    from medvlsm_jax.ops.resize import nearest_indices

    bad, rational_bad = [], 0
    for n_out in range(1, 2001):
        for kernel in ("generic", "vectorized"):
            want = _torch_nearest_indices(n_in, n_out, "nearest-exact", dtype, kernel)
            if not np.array_equal(nearest_indices(n_in, n_out, "nearest-exact", dtype, kernel == "vectorized"), want):
                bad.append((n_out, kernel))
            rational_bad += not np.array_equal(_exact_rational_rule(n_in, n_out), want)
    assert not bad, f"{len(bad)} (size, kernel) pairs differ from torch, first {bad[:5]}"
    assert rational_bad > 50  # the exact rational rule is not torch's: this test can tell them apart


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_legacy_nearest_indices_match_torch(dtype):
    from medvlsm_jax.ops.resize import nearest_indices

    for n_in in (352, 416, 7):
        for n_out in list(range(1, 300)) + [2 * n_in, n_in]:
            for kernel in ("generic", "vectorized"):
                want = _torch_nearest_indices(n_in, n_out, "nearest", dtype, kernel)
                got = nearest_indices(n_in, n_out, "nearest", dtype, kernel == "vectorized")
                np.testing.assert_array_equal(got, want, err_msg=f"{n_in}->{n_out} {kernel}")


@pytest.mark.parametrize("in_hw,out_hw", [((416, 416), (720, 1280)), ((352, 352), (576, 720)),
                                          ((352, 352), (60, 50)), ((416, 352), (1080, 1350))])
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_nearest_exact_full_arrays_match_torch(in_hw, out_hw, dtype):
    """Whole masks as the evaluation resizes them (the original: ``TF.resize(pred.double(),
    NEAREST_EXACT)``; torch's kernel choice follows the output size)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, in_hw).astype(np.uint8) * rng.integers(1, 256, in_hw).astype(np.uint8)
    ref = F.interpolate(torch.from_numpy(x).to(getattr(torch, dtype))[None, None], size=out_hw,
                        mode="nearest-exact")[0, 0].to(torch.uint8).numpy()
    out = np.asarray(resize(x[None, ..., None], out_hw, method="nearest-exact", compute_dtype=dtype))[0, ..., 0]
    np.testing.assert_array_equal(out, ref)
