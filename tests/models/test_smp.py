"""The CNN baselines' model contract, BatchNorm and dropout semantics, the input-size rule and the
configs. Numerical parity with segmentation_models_pytorch: tests/conversion/test_smp_conversion.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medvlsm_jax.api import _materialise_rngs
from medvlsm_jax.data.shorter_side import dataset_input_size, torchvision_resize_size
from medvlsm_jax.models.registry import get_spec
from medvlsm_jax.models.resnet import BatchNorm2d

FAMILIES = ("unet", "unetpp", "deeplabv3plus")


def _tiny(family: str, seed: int = 0, **overrides) -> nnx.Module:
    """A tiny model with He-scaled random weights drawn in numpy (no per-shape jax compiles)."""
    spec = get_spec(family)
    model = nnx.eval_shape(lambda: spec.build(spec.config("tiny", **overrides), nnx.Rngs(0)))
    rng = np.random.default_rng(seed)

    def fill(path, x):
        name = path[-1]
        if name == "kernel":
            fan_in = int(np.prod(x.shape[:-1]))
            return rng.normal(0, np.sqrt(2.0 / fan_in), x.shape).astype(np.float32)
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, x.shape).astype(np.float32)
        return rng.normal(0, 0.1, x.shape).astype(np.float32)  # bias, mean

    state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    pure = jax.tree_util.tree_map_with_path(lambda p, x: fill([getattr(k, "key", k) for k in p], x),
                                            state.to_pure_dict())
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)
    _materialise_rngs(model)
    return model


def _x(b=2, h=64, w=96, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, h, w, 3)).astype(np.float32))


@pytest.mark.parametrize("family", FAMILIES)
def test_contract(family):
    spec = get_spec(family)
    pre = spec.resolve_contract(spec.config("base"))
    assert pre.text is None and pre.image_size == (256, 256) and spec.threshold == 0.5
    model = _tiny(family)
    model.eval()
    assert model.encoder_prefixes == ("encoder",)
    x = _x()
    feats = nnx.jit(lambda m, a: m.encode(a))(model, x)
    stride_last = 16 if family == "deeplabv3plus" else 32
    assert [f.shape for f in feats] == [
        (2, 64, 96, 3), (2, 32, 48, 64), (2, 16, 24, 256), (2, 8, 12, 512), (2, 4, 6, 1024),
        (2, 64 // stride_last, 96 // stride_last, 2048)]
    logits = nnx.jit(lambda m, a: m(a))(model, x)
    assert logits.shape == (2, 64, 96) and logits.dtype == jnp.float32
    np.testing.assert_array_equal(logits, nnx.jit(lambda m, f: m.decode(f))(model, feats))
    with pytest.raises(ValueError, match="divisible by"):
        model(_x(1, 64, 80) if family != "deeplabv3plus" else _x(1, 64, 72))


def test_base_configs_are_resnet50_as_medvlsm():
    for family in FAMILIES:
        c = get_spec(family).config("base")
        assert c.layers == (3, 4, 6, 3) and c.width_per_group == 64
    assert get_spec("unet").config("base").decoder_channels == (256, 128, 64, 32, 16)
    d = get_spec("deeplabv3plus").config("base")
    assert (d.output_stride, d.decoder_channels, d.atrous_rates, d.aspp_dropout, d.upsampling) == (
        16, 256, (12, 24, 36), 0.5, 4)


def test_train_mode_batch_statistics_and_dropout():
    model = _tiny("deeplabv3plus")
    x = _x()
    fwd = nnx.jit(lambda m, a: m(a))
    model.eval()
    a, b = fwd(model, x), fwd(model, x)
    np.testing.assert_array_equal(a, b)
    model.train()
    bn = model.encoder.bn1
    before = np.asarray(bn.mean[...]).copy()
    t1, t2 = fwd(model, x), fwd(model, x)
    assert not np.array_equal(before, np.asarray(bn.mean[...]))  # running statistics move
    assert np.abs(np.asarray(t1) - np.asarray(t2)).max() > 1e-3  # a fresh dropout mask per call
    # without dropout the train-mode output is a function of the batch alone
    model = _tiny("deeplabv3plus", aspp_dropout=0.0)
    model.train()
    np.testing.assert_allclose(fwd(model, x), fwd(model, x), rtol=1e-6, atol=1e-6)


def test_batchnorm_matches_torch_in_both_modes():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    ours = BatchNorm2d(6, rngs=nnx.Rngs(0))
    ref = torch.nn.BatchNorm2d(6)
    scale, bias = rng.uniform(0.5, 1.5, 6).astype(np.float32), rng.normal(size=6).astype(np.float32)
    ours.scale[...], ours.bias[...] = scale, bias
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(scale))
        ref.bias.copy_(torch.from_numpy(bias))
    for step in range(3):  # 2*3*2 = 12 values per channel: n / (n - 1) matters
        x = (rng.normal(size=(2, 3, 2, 6)) * 3 + 1).astype(np.float32)
        ours.train()
        ref.train()
        got = np.asarray(ours(jnp.asarray(x)))
        want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours.mean[...], ref.running_mean.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ours.var[...], ref.running_var.numpy(), rtol=1e-6, atol=1e-6)
    ours.eval()
    ref.eval()
    got = np.asarray(ours(jnp.asarray(x)))
    want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    ours.train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ours(jnp.ones((1, 1, 1, 6)))


def test_bfloat16_compute():
    x = _x()
    f32 = _tiny("unet")
    bf16 = _tiny("unet", dtype="bfloat16")
    for m in (f32, bf16):
        m.eval()
    a = np.asarray(nnx.jit(lambda m, v: m(v))(f32, x))
    b = nnx.jit(lambda m, v: m(v))(bf16, x)
    assert b.dtype == jnp.float32
    assert nnx.state(bf16, nnx.Param).flat_state()[0][1].get_value().dtype == jnp.float32  # weights stay float32
    b = np.asarray(b)  # bfloat16 keeps ~3 digits per op; a random net amplifies that
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99 and np.abs(b - a).mean() < 0.05 * max(1.0, a.std())


def test_shorter_side_rule():
    torch = pytest.importorskip("torch")
    from PIL import Image
    from torchvision.transforms import Resize

    for h, w in [(288, 384), (966, 1225), (500, 574), (959, 1280), (1024, 1280), (600, 600), (1072, 1920), (487, 332)]:
        want = Resize(256)(Image.new("RGB", (w, h))).size[::-1]
        assert torchvision_resize_size(h, w, 256) == want
    assert dataset_input_size([(1024, 1280)] * 3) == (256, 320)  # one aspect ratio, divisible: kept
    assert dataset_input_size([(288, 384)] * 3) == (256, 256)  # 256x341: SMP would refuse it
    assert dataset_input_size([(1024, 1280), (600, 600)]) == (256, 256)  # mixed ratios
    assert dataset_input_size([(288, 384)], stride=1) == (256, 341)
    del torch


def test_cnn_configs():
    from medvlsm_jax.config import load_config

    get_config = lambda arg: load_config(f"cnn:{arg}")  # noqa: E731
    ENDOSCOPY = ("kvasir_polyp", "clinicdb_polyp", "bkai_polyp", "cvc300_polyp", "colondb_polyp", "etis_polyp")
    from medvlsm_jax.train import losses

    c = get_config("model=unetpp,dataset=pooled_all")
    assert (c.model.name, c.data.dataset, c.model.freeze_encoder) == ("unetpp", "pooled_all", False)
    assert (c.train.optimizer, c.train.lr, c.train.batch_size, c.train.loss) == ("adam", 1e-3, 16, "tuned_dice")
    assert (c.train.grad_clip, c.train.early_stopping_patience, c.eval.datasets) == (0.5, 20, "")
    losses.check_loss(c.train.loss)
    t4 = get_config("model=deeplabv3plus,dataset=clinicdb_polyp,eval=endoscopy")
    assert t4.eval.datasets.split(",") == list(ENDOSCOPY) and len(ENDOSCOPY) == 6
    with pytest.raises(ValueError, match="model='vit'"):
        get_config("model=vit")
    clipseg_config = lambda arg: load_config(f"clipseg:{arg}")  # noqa: E731

    with pytest.raises(ValueError, match="expected key=value"):
        clipseg_config("model=unet")
