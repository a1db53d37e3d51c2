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
