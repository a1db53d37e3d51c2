"""UNet, UNet++ and DeepLabV3+ (ResNet-50): segmentation_models_pytorch -> medvlsm-convert ->
medvlsm_jax.load, against SMP itself.

References are seeded random-init SMP models (``smp_reference.build``: random BatchNorm
scales/shifts, conv biases and running statistics). Numbers:

* eval logits (tiny sizes, float32): ``max|Δ| <= 1e-4 * max(1, std)`` at 256² and 160x224;
* ResNet-50 (medvlsm's size): exact in float64 (both sides), and in float32 as accurate as
  PyTorch's own float32 (a random 50-layer net amplifies rounding to ~2e-4 * std in *either*
  framework, measured against the float64 result, so 1e-4 * std is out of reach for any float32
  implementation there);
* one Adam step (lr 1e-3, medvlsm's TunedDiceLoss) in train mode: loss, every updated parameter
  and every updated BatchNorm running statistic, against PyTorch run in float64 (PyTorch's own
  float32 gradients of a train-mode BatchNorm network are off by up to ~20 % for some tensors;
  ours agree with the float64 ones to ~1e-5).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import medvlsm_jax
from medvlsm_jax.api import _materialise_rngs
from medvlsm_jax.models.registry import config_from_dict, get_spec
from medvlsm_jax.train import losses
from medvlsm_jax.weights import read_model_json, restore_params
from medvlsm_jax.conversion.rules import ConversionError

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
pytestmark = pytest.mark.torch

from medvlsm_jax.cli import convert as convert_cli  # noqa: E402
from tests.conversion import smp_reference as ref  # noqa: E402
from tests.train.medvlsm_tuned_dice import TunedDiceLoss  # noqa: E402
from medvlsm_jax.conversion import smp as wc  # noqa: E402

FAMILIES = ("unet", "unetpp", "deeplabv3plus")
_WEIGHTS = nnx.Any(nnx.Param, nnx.BatchStat)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(family, variant) -> (SMP reference in eval mode, converted folder), built once."""
    cache = {}

    def get(family: str, variant: str):
        if (family, variant) not in cache:
            model = ref.build(family, variant, seed=FAMILIES.index(family))
            root = tmp_path_factory.mktemp(f"{family}_{variant}")
            torch.save(model.state_dict(), root / "smp.pt")
            assert convert_cli.main([family, str(root / "smp.pt"), str(root / "dst"), "--variant", variant]) == 0
            cache[family, variant] = model, root / "dst"
        return cache[family, variant]

    return get


def _restored(folder, family: str, **overrides) -> nnx.Module:
    """The converted model at ``folder`` (config fields overridden), as ``medvlsm_jax.load``
    builds it."""
    config = dataclasses.replace(config_from_dict(family, read_model_json(folder)["config"]), **overrides)
    model = nnx.eval_shape(lambda: get_spec(family).build(config, nnx.Rngs(0)))
    restore_params(folder, model)
    _materialise_rngs(model)
    return model


def _images(b: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(b, h, w, 3)).astype(np.float32)


def _smp_logits(model, x_nhwc: np.ndarray, dtype=torch.float32) -> np.ndarray:
    model = model.to(dtype)
    with torch.no_grad():
        out = model(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2)).to(dtype))[:, 0].numpy()
    model.float()
    return out


@pytest.mark.parametrize("size", [(256, 256), (160, 224)])
@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_logits_match_smp(converted, family, size):
    model, folder = converted(family, "tiny")
    seg = medvlsm_jax.load(folder)
    x = _images(2, *size)
    want = _smp_logits(model, x)
    got = np.asarray(seg.logits(x))
    assert got.shape == want.shape == (2, *size)
    err, tol = np.abs(got - want).max(), 1e-4 * max(1.0, want.std())
    assert err <= tol, f"{family} {size}: max |Δ| {err:.3g} > {tol:.3g} (std {want.std():.3g})"


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_resnet50_logits_match_smp(converted, family):
    model, folder = converted(family, "base")
    seg = medvlsm_jax.load(folder)
    # float32 at 256²: as close to the exact (float64) result as PyTorch's own float32
    x = _images(1, 256, 256)
    exact = _smp_logits(model, x, torch.float64)
    want = _smp_logits(model, x)
    got = np.asarray(seg.logits(x))
    ours, theirs = np.abs(got - exact).max(), np.abs(want - exact).max()
    scale = max(1.0, exact.std())
    assert ours <= max(2 * theirs, 1e-4 * scale), (
        f"{family}: float32 error {ours:.3g} vs PyTorch's float32 error {theirs:.3g} (std {exact.std():.3g}); "
        f"|ours - PyTorch float32| = {np.abs(got - want).max():.3g}")
    assert ours <= 5e-4 * scale
    # float64 on both sides, non-square: the same function
    x = _images(1, 160, 224, seed=1).astype(np.float64)
    exact = _smp_logits(model, x, torch.float64)
    with jax.enable_x64(True):
        m64 = _restored(folder, family, dtype="float64")
        m64.eval()
        got = np.asarray(nnx.jit(lambda m, a: m(a))(m64, jnp.asarray(x)))
    assert np.abs(got - exact).max() <= 1e-9 * max(1.0, exact.std())


# ---------------------------------------------------------------------------------------------
# One optimiser step in train mode


def _torch_step(model, x, mask):
    """medvlsm's training step (BaseModule.step + Adam 1e-3) in float64."""
    model = model.double().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2)).double())
    loss = TunedDiceLoss()(torch.sigmoid(logits), torch.from_numpy(mask).double()[:, None])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item(), {k: v.detach().numpy() for k, v in model.state_dict().items()}


@nnx.jit
def _flax_step(model, optimizer, x, mask):
    def loss_fn(model):
        return jnp.mean(losses.per_example_loss("tuned_dice", model(x), mask))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def _step_case(tmp_path, family: str):
    """A converted tiny model, its SMP reference after medvlsm's step in float64, and a batch.
    DeepLabV3+'s dropout masks cannot be shared between frameworks: dropout is off on both sides."""
    no_dropout = family == "deeplabv3plus"
    torch_kw, flax_kw = ({"decoder_aspp_dropout": 0.0}, {"aspp_dropout": 0.0}) if no_dropout else ({}, {})
    model = ref.build(family, "tiny", seed=10 + FAMILIES.index(family), **torch_kw)
    torch.save(model.state_dict(), tmp_path / "smp.pt")
    assert convert_cli.main([family, str(tmp_path / "smp.pt"), str(tmp_path / "dst"), "--variant", "tiny"]) == 0
    rng = np.random.default_rng(0)
    x = _images(2, 64, 96)
    mask = (rng.random((2, 64, 96)) > 0.7).astype(np.float32)
    want_loss, want_sd = _torch_step(model, x, mask)
    return tmp_path / "dst", flax_kw, x, mask, want_loss, want_sd


def _snapshot(model) -> dict:
    return {k: np.array(v.get_value()) for k, v in nnx.state(model, nnx.Param).flat_state()}


def _compare_step(model, want, before, *, param_atol: float, stat_rtol: float):
    """Every updated weight and running statistic of ``model`` against ``want`` (same tree).
    Returns (weights that moved by > lr/2, weights within ``param_atol``... of ``want``, total)."""
    want_leaves = dict(nnx.state(want, _WEIGHTS).flat_state())
    moved = close = total = 0
    for path, var in nnx.state(model, _WEIGHTS).flat_state():
        name = ".".join(map(str, path))
        got, exp = np.asarray(var.get_value()), np.asarray(want_leaves[path].get_value())
        if isinstance(var, nnx.BatchStat):
            np.testing.assert_allclose(got, exp, rtol=stat_rtol, atol=stat_rtol, err_msg=name)
            continue
        diff = np.abs(got - exp)
        moved += int(np.sum(np.abs(got - before[path]) > 5e-4))
        close += int(np.sum(diff <= param_atol))
        total += got.size
    return moved, close, total


@pytest.mark.parametrize("family", FAMILIES)
def test_train_step_matches_smp(tmp_path, family):
    """Float64 on both sides: the same step, to rounding."""
    folder, flax_kw, x, mask, want_loss, want_sd = _step_case(tmp_path, family)
    with jax.enable_x64(True):
        model = _restored(folder, family, dtype="float64", **flax_kw)
        nnx.update(model, jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), nnx.state(model, _WEIGHTS)))
        want = nnx.clone(model)
        before = _snapshot(model)
        model.train()
        optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
        loss = float(_flax_step(model, optimizer, x.astype(np.float64), mask.astype(np.float64)))
        wc.load_into(want, want_sd, wc.SMP_STATE_DICT)  # keeps float64 leaves
        assert loss == pytest.approx(want_loss, rel=1e-10)
        moved, close, total = _compare_step(model, want, before, param_atol=1e-9, stat_rtol=1e-9)
    assert close == total, f"{total - close} of {total} updated weights differ by more than 1e-9"
    assert moved > 0.9 * total  # the step is not vacuous: ~lr * sign(g) for almost every weight


def test_float32_train_step_matches_smp(tmp_path):
    """Float32 (the training dtype): loss and statistics to float32 accuracy; Adam's first step
    is ~lr * sign(g), so weights whose gradient is at rounding level may move differently."""
    folder, _, x, mask, want_loss, want_sd = _step_case(tmp_path, "unet")
    model = _restored(folder, "unet")
    want = nnx.clone(model)
    before = _snapshot(model)
    model.train()
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    loss = float(_flax_step(model, optimizer, x, mask))
    assert loss == pytest.approx(want_loss, rel=1e-6)
    wc.load_into(want, {k: v.astype(np.float32) for k, v in want_sd.items()}, wc.SMP_STATE_DICT)
    moved, close, total = _compare_step(model, want, before, param_atol=1e-6, stat_rtol=1e-5)
    assert close >= 0.999 * total, f"{total - close} of {total} updated weights differ by more than 1e-6"
    assert moved > 0.9 * total


# ---------------------------------------------------------------------------------------------
# Sources and errors


def _lightning_ckpt(sd: dict, path) -> None:
    """What medvlsm's Lightning checkpoints hold: ``net.``-prefixed weights next to pickled
    objects (the loss module, the optimiser partial) that weights_only=True refuses."""
    torch.save({
        "epoch": 7, "global_step": 420, "pytorch-lightning_version": "2.0.0",
        "state_dict": {f"net.{k}": v for k, v in sd.items()},
        "hyper_parameters": {"loss_fn": TunedDiceLoss(), "threshold": 0.5, "multi_class": False,
                             "optimizer": functools.partial(torch.optim.Adam, lr=1e-3)},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]}],
    }, path)


def _leaves(folder) -> dict:
    meta = read_model_json(folder)
    model = nnx.eval_shape(lambda: get_spec(meta["family"]).build(config_from_dict(meta["family"], meta["config"]),
                                                                  nnx.Rngs(0)))
    restore_params(folder, model)
    return {k: np.asarray(v.get_value()) for k, v in nnx.state(model, _WEIGHTS).flat_state()}


def test_every_source_format_gives_the_same_weights(converted, tmp_path):
    model, folder = converted("unet", "tiny")
    base = _leaves(folder)
    model.save_pretrained(tmp_path / "pretrained")
    _lightning_ckpt(model.state_dict(), tmp_path / "epoch_007.ckpt")
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        torch.load(tmp_path / "epoch_007.ckpt", weights_only=True)
    for src, fmt in ((tmp_path / "pretrained", wc.SAVE_PRETRAINED), (tmp_path / "epoch_007.ckpt", wc.LIGHTNING)):
        dst = tmp_path / f"out_{fmt}"
        assert convert_cli.main(["unet", str(src), str(dst), "--variant", "tiny"]) == 0
        assert read_model_json(dst)["source_format"] == fmt
        got = _leaves(dst)
        assert got.keys() == base.keys() and all(np.array_equal(got[k], base[k]) for k in base)
    # a folder of another SMP class is refused
    assert wc.convert(tmp_path / "pretrained", tmp_path / "x", family="unet", variant="tiny")
    with pytest.raises(ConversionError, match="_model_class is 'Unet'"):
        wc.convert(tmp_path / "pretrained", tmp_path / "y", family="unetpp", variant="tiny")


def _tiny_resnet(kind: str):
    """A torchvision or timm Bottleneck ResNet in the tiny encoder's shape (fc included)."""
    torch.manual_seed(3)
    if kind == "torchvision":
        from torchvision.models.resnet import Bottleneck, ResNet

        return ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=16)
    import timm.models.resnet as tr

    return tr.ResNet(block=tr.Bottleneck, layers=[1, 1, 1, 1], base_width=16)


@pytest.mark.parametrize("kind", ["torchvision", "timm"])
def test_encoder_weights_with_a_fresh_decoder(tmp_path, kind):
    net = _tiny_resnet(kind).eval()
    with torch.no_grad():  # non-trivial statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), tmp_path / "r50.pth")
    dst = tmp_path / "dst"
    assert convert_cli.main(["deeplabv3plus", "--encoder", str(tmp_path / "r50.pth"), str(dst),
                             "--variant", "tiny", "--seed", "5"]) == 0
    meta = read_model_json(dst)
    assert meta["source_format"] == wc.RESNET and meta["fresh_init"] == ["decoder", "segmentation_head"]
    seg = medvlsm_jax.load(dst)
    # the encoder is the ResNet (layer4 dilated as SMP does it: compare up to layer3)
    x = _images(1, 64, 96)
    feats = nnx.jit(lambda m, a: m.encode(a))(seg.model, x)
    act = net.relu if kind == "torchvision" else net.act1
    with torch.no_grad():
        t = act(net.bn1(net.conv1(torch.from_numpy(x.transpose(0, 3, 1, 2)))))
        want = [t]
        t = net.layer1(net.maxpool(t))
        want.append(t)
        for layer in (net.layer2, net.layer3):
            t = layer(t)
            want.append(t)
    for a, b in zip(feats[1:5], want):
        np.testing.assert_allclose(np.asarray(a), b.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
    # the decoder is SMP-initialised and seeded; the same file is recognised as SRC too
    again = tmp_path / "again"
    assert convert_cli.main(["deeplabv3plus", str(tmp_path / "r50.pth"), str(again), "--variant", "tiny",
                             "--seed", "5"]) == 0
    assert read_model_json(again)["source_format"] == wc.RESNET
    a, b = _leaves(dst), _leaves(again)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not a[("segmentation_head", 0, "bias")].any()  # SMP initialize_head: zero bias
    with pytest.raises(SystemExit):  # SRC and --encoder together are refused
        convert_cli.main(["unet", str(tmp_path / "r50.pth"), str(tmp_path / "z"),
                          "--encoder", str(tmp_path / "r50.pth")])


def test_errors_list_every_mismatch(converted, tmp_path, capsys):
    model, _ = converted("unetpp", "tiny")
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    del sd["decoder.blocks.x_1_2.conv1.0.weight"]
    sd["decoder.blocks.x_9_9.conv1.0.weight"] = np.zeros(3, np.float32)
    sd["segmentation_head.0.bias"] = np.zeros(2, np.float32)
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, tmp_path / "bad.pt")
    assert convert_cli.main(["unetpp", str(tmp_path / "bad.pt"), str(tmp_path / "out"), "--variant", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "bad.pt" in err and "1 missing" in err and "decoder.blocks.x_1_2.conv1.0.weight" in err
    assert "1 unexpected" in err and "decoder.blocks.x_9_9.conv1.0.weight" in err
    assert "1 wrong shape" in err and "segmentation_head.0.bias: got (2,), expected (1,)" in err
    # a checkpoint of another family is a listing too
    assert convert_cli.main(["unet", str(tmp_path / "bad.pt"), str(tmp_path / "out"), "--variant", "tiny"]) == 2
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pt")
    assert convert_cli.main(["unet", str(tmp_path / "other.pt"), str(tmp_path / "out")]) == 2
    assert "neither an SMP checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        convert_cli.main(["unet", str(tmp_path / "other.pt"), str(tmp_path / "out"), "--pad-id", "0"])


def test_image_only_api(converted, tmp_path, capsys):
    from PIL import Image

    _, folder = converted("unet", "tiny")
    seg = medvlsm_jax.load(folder)
    assert seg.tokenizer is None and not seg.takes_text and seg.contract.image_size == (256, 256)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8))
    mask = seg.predict(img)
    assert mask.shape == (70, 90) and mask.dtype == bool
    assert seg.predict(img, threshold=-1.0).all()
    with pytest.raises(ValueError, match="image-only"):
        seg.predict(img, "a polyp")
    with pytest.raises(ValueError, match="image-only"):
        seg.logits(np.zeros((1, 256, 256, 3), np.float32), np.zeros((1, 77), np.int32))
    # medvlsm-predict without --prompt
    from medvlsm_jax.cli import predict as predict_cli

    img.save(tmp_path / "im.png")
    assert predict_cli.main(["--checkpoint", str(folder), "--image", str(tmp_path / "im.png"),
                             "--out", str(tmp_path / "pred")]) == 0
    assert Image.open(tmp_path / "pred" / "im_mask.png").size == (90, 70)
    # A prompt for an image-only model is a user error: one line on stderr, exit 2, nothing written.
    (tmp_path / "pred2").mkdir()
    assert predict_cli.main(["--checkpoint", str(folder), "--image", str(tmp_path / "im.png"), "--prompt", "polyp",
                             "--out", str(tmp_path / "pred2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "takes no --prompt" in err[-1]
    assert not any((tmp_path / "pred2").iterdir())
