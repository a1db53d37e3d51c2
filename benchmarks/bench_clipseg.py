"""CLIPSeg forward throughput: Flax (jit) vs transformers' PyTorch model, same weights, one run.

    python -m benchmarks.bench_clipseg --batch 4 --size 352 [--iters 10] [--out benchmarks/results]

Both sides run the rd64-refined architecture from the same random weights (converted in memory);
the PyTorch side is ``CLIPSegForImageSegmentation`` in eval mode under ``torch.inference_mode``
(it computes all 12 vision blocks; ours stops at the deepest tapped block, 10). Compile time is
reported apart from the steady-state median.
"""

from __future__ import annotations

import argparse
import json

import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import harness


def run(batch: int = 4, size: int = 352, iters: int = 10, warmup: int = 2, dtype: str = "float32") -> dict:
    import torch
    import transformers

    from medvlsm_jax.data.tokenizers import ClipTokenizer
    from medvlsm_jax.models.clipseg import CLIPSeg
    from weight_conversion.clipseg import config_from_hf, load_into

    torch.set_num_threads(max(1, torch.get_num_threads()))
    hf_cfg = transformers.CLIPSegConfig(
        text_config={"eos_token_id": 2}, vision_config={"patch_size": 16}, extract_layers=[3, 6, 9], reduce_dim=64,
        decoder_num_attention_heads=4, decoder_intermediate_size=2048, use_complex_transposed_convolution=True)
    torch.manual_seed(0)
    ref = transformers.CLIPSegForImageSegmentation(hf_cfg).eval()
    cfg = config_from_hf(hf_cfg.to_dict())
    cfg = cfg.__class__(**{**cfg.to_dict(), "dtype": dtype})
    model = CLIPSeg(cfg, rngs=nnx.Rngs(0))
    load_into(model, {k: v.numpy() for k, v in ref.state_dict().items()}, "in-memory")

    tok = ClipTokenizer.default()(["a polyp"] * (batch // 2) + ["one small pink round polyp"] * (batch - batch // 2))
    px = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype(np.float32)

    graphdef, state = nnx.split(model)

    def forward(state, px, ids, am):
        return nnx.merge(graphdef, state)(px, ids, am)

    jax_args = (state, jnp.asarray(px), jnp.asarray(tok["input_ids"]), jnp.asarray(tok["attention_mask"]))
    flax_res = harness.time_jax(forward, *jax_args, batch=batch, warmup=warmup, iters=iters)

    t_px = torch.from_numpy(px.transpose(0, 3, 1, 2).copy())
    t_ids = torch.from_numpy(tok["input_ids"].astype(np.int64))
    t_am = torch.from_numpy(tok["attention_mask"].astype(np.int64))

    def torch_forward():
        with torch.inference_mode():
            return ref(pixel_values=t_px, input_ids=t_ids, attention_mask=t_am).logits

    torch_res = harness.time_torch(torch_forward, batch=batch, warmup=warmup, iters=iters)
    return {
        "benchmark": "clipseg_forward",
        "batch": batch, "size": size, "dtype": dtype,
        "env": harness.environment(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "flax": flax_res, "pytorch": torch_res,
        "speedup": flax_res["img_per_s"] / torch_res["img_per_s"],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=352)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", default=None, help="folder for the JSON result")
    a = p.parse_args(argv)
    res = run(a.batch, a.size, a.iters, a.warmup, a.dtype)
    print(json.dumps(res, indent=2))
    print("\n| model | batch | size | flax img/s | pytorch img/s | ratio | compile s |")
    print("|---|---|---|---|---|---|---|")
    print(harness.markdown_row(["clipseg fwd", a.batch, a.size, res["flax"]["img_per_s"], res["pytorch"]["img_per_s"],
                                res["speedup"], res["flax"]["compile_s"]]))
    harness.write_result(f"clipseg_forward_b{a.batch}_s{a.size}", res, a.out)


if __name__ == "__main__":
    main()
