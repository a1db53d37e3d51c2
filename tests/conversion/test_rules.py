"""The generic torch -> NNX rule set, against real torch modules."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medvlsm_jax.conversion import rules

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)
        self.conv = torch.nn.Conv2d(3, 5, 3, padding=1)
        self.up = torch.nn.ConvTranspose2d(5, 2, 4, stride=4)
        self.bn = torch.nn.BatchNorm2d(5)
        self.ln = torch.nn.LayerNorm(4)
        self.gn = torch.nn.GroupNorm(1, 2)
        self.emb = torch.nn.Embedding(7, 4)
        self.token = torch.nn.Parameter(torch.randn(4))
        self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(2)])
        with torch.no_grad():
            self.bn.running_mean.normal_()
            self.bn.running_var.uniform_(0.5, 2)


class FlaxNet(nnx.Module):
    def __init__(self, rngs):
        self.fc = nnx.Linear(3, 4, rngs=rngs)
        self.conv = nnx.Conv(3, 5, (3, 3), padding=1, rngs=rngs)
        self.up = nnx.ConvTranspose(5, 2, (4, 4), strides=(4, 4), padding="VALID", rngs=rngs)
        self.bn = nnx.BatchNorm(5, use_running_average=True, epsilon=1e-5, rngs=rngs)
        self.ln = nnx.LayerNorm(4, epsilon=1e-5, rngs=rngs)
        self.gn = nnx.GroupNorm(2, num_groups=1, epsilon=1e-5, rngs=rngs)
        self.emb = nnx.Embed(7, 4, rngs=rngs)
        self.token = nnx.Param(jnp.zeros(4))
        self.layers = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(2)])


def _sd(m):
    return {k: v.detach().numpy() for k, v in m.state_dict().items()}


def test_generic_rules_reproduce_torch_outputs():
    t, f = TorchNet().eval(), FlaxNet(nnx.Rngs(0))
    report = rules.convert_state_dict(f, _sd(t), drop=["*.num_batches_tracked"])
    assert report.dropped == ["bn.num_batches_tracked"] and not report.kept_init
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 6)).astype(np.float32)
    with torch.no_grad():
        want = t.gn(t.up(t.bn(t.conv(torch.from_numpy(x))))).numpy()
        want_fc = t.layers[1](t.ln(t.fc(torch.ones(1, 3)) + t.emb(torch.tensor([5])) + t.token)).numpy()
    got = np.asarray(f.gn(f.up(f.bn(f.conv(jnp.asarray(x.transpose(0, 2, 3, 1)))))))
    np.testing.assert_allclose(got.transpose(0, 3, 1, 2), want, atol=1e-5)
    got_fc = f.layers[1](f.ln(f.fc(jnp.ones((1, 3))) + f.emb(jnp.array([5])) + f.token[...]))
    np.testing.assert_allclose(np.asarray(got_fc), want_fc, atol=1e-5)


def test_expected_keys_are_the_torch_state_dict():
    t, f = TorchNet(), FlaxNet(nnx.Rngs(0))
    want = {k: tuple(v.shape) for k, v in t.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert rules.expected_torch_keys(f) == want


def test_strict_diff_lists_all_problems():
    sd = _sd(TorchNet())
    del sd["fc.bias"], sd["layers.1.weight"]
    sd["extra.weight"] = np.zeros(2)
    sd["ln.weight"] = np.zeros(5)
    with pytest.raises(rules.ConversionError) as e:
        rules.convert_state_dict(FlaxNet(nnx.Rngs(0)), sd, drop=["*.num_batches_tracked"], source="ckpt.pt")
    msg = str(e.value)
    assert "ckpt.pt does not match FlaxNet" in msg
    assert "2 missing key(s)" in msg and "fc.bias (expected torch shape (4,))" in msg and "layers.1.weight" in msg
    assert "1 unexpected key(s)" in msg and "extra.weight" in msg
    assert "ln.weight: got (5,), expected (4,)" in msg


def test_allow_missing_keeps_init_and_reports_it():
    sd = {k: v for k, v in _sd(TorchNet()).items() if not k.startswith("layers.")}
    f = FlaxNet(nnx.Rngs(0))
    before = np.asarray(f.layers[0].kernel[...]).copy()
    report = rules.convert_state_dict(f, sd, drop=["*.num_batches_tracked"], allow_missing=["layers.*"])
    assert report.kept_init == ["layers.0.bias", "layers.0.weight", "layers.1.bias", "layers.1.weight"]
    np.testing.assert_array_equal(np.asarray(f.layers[0].kernel[...]), before)
    assert "left at their initialisation" in report.summary()


def test_key_map_helpers():
    mha = torch.nn.MultiheadAttention(4, 2)
    sd = rules.split_fused_qkv(rules.strip_prefix({f"module.attn.{k}": v.numpy() for k, v in mha.state_dict().items()},
                                                  "module."))
    w = mha.in_proj_weight.detach().numpy()
    np.testing.assert_array_equal(sd["attn.k_proj.weight"], w[4:8])
    assert set(sd) == {f"attn.{n}.{p}" for n in ("q_proj", "k_proj", "v_proj", "out_proj") for p in ("weight", "bias")}
    assert rules.rename_keys({"a.0.b": 1}, [(r"\.0\.", ".zero.")]) == {"a.zero.b": 1}
