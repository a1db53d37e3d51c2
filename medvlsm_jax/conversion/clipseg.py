"""transformers ``CLIPSegForImageSegmentation`` folder -> medvlsm-jax converted model folder.

SRC is a local folder as ``save_pretrained`` writes it or a hub snapshot holds it: ``config.json``
plus ``model.safetensors`` or ``pytorch_model.bin`` (read with ``weights_only=True``), and
optionally the tokenizer files (``vocab.json``, ``merges.txt``).
"""

from __future__ import annotations

import json
import os

from flax import nnx

from medvlsm_jax import weights
from medvlsm_jax.data.tokenizers import ClipTokenizer
from medvlsm_jax.models.clipseg import SPEC, CLIPSeg, CLIPSegConfig
from medvlsm_jax.conversion import rules, torch_io

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def config_from_hf(hf: dict) -> CLIPSegConfig:
    """Maps a transformers ``CLIPSegConfig`` (as JSON) onto :class:`CLIPSegConfig`."""
    try:
        v, t = hf["vision_config"], hf["text_config"]
    except KeyError as e:
        raise rules.ConversionError(f"config.json has no {e.args[0]!r}: not a CLIPSeg config") from None
    base = CLIPSegConfig()
    act_v, act_t = v.get("hidden_act", base.hidden_act), t.get("hidden_act", base.hidden_act)
    if act_v != act_t:
        raise rules.ConversionError(f"vision ({act_v}) and text ({act_t}) activations differ; not supported")
    return CLIPSegConfig(
        pretrain_image_size=v.get("image_size", base.pretrain_image_size),
        patch_size=v.get("patch_size", base.patch_size),
        vision_hidden_size=v.get("hidden_size", base.vision_hidden_size),
        vision_layers=v.get("num_hidden_layers", base.vision_layers),
        vision_heads=v.get("num_attention_heads", base.vision_heads),
        vision_intermediate_size=v.get("intermediate_size", base.vision_intermediate_size),
        vocab_size=t.get("vocab_size", base.vocab_size),
        max_position_embeddings=t.get("max_position_embeddings", base.max_position_embeddings),
        text_hidden_size=t.get("hidden_size", base.text_hidden_size),
        text_layers=t.get("num_hidden_layers", base.text_layers),
        text_heads=t.get("num_attention_heads", base.text_heads),
        text_intermediate_size=t.get("intermediate_size", base.text_intermediate_size),
        eos_token_id=t.get("eos_token_id", base.eos_token_id),
        projection_dim=hf.get("projection_dim", base.projection_dim),
        hidden_act=act_v,
        layer_norm_eps=v.get("layer_norm_eps", base.layer_norm_eps),
        extract_layers=tuple(hf.get("extract_layers", base.extract_layers)),
        reduce_dim=hf.get("reduce_dim", base.reduce_dim),
        decoder_heads=hf.get("decoder_num_attention_heads", base.decoder_heads),
        decoder_intermediate_size=hf.get("decoder_intermediate_size", base.decoder_intermediate_size),
        conditional_layer=hf.get("conditional_layer", base.conditional_layer),
        use_complex_transposed_convolution=hf.get("use_complex_transposed_convolution",
                                                  base.use_complex_transposed_convolution),
    )


def dropped_keys(cfg: CLIPSegConfig) -> list[str]:
    """Keys of the transformers checkpoint that CLIPSeg's forward never uses."""
    unused_blocks = [f"clip.vision_model.encoder.layers.{i}.*" for i in range(cfg.vision_depth, cfg.vision_layers)]
    return unused_blocks + [
        "clip.vision_model.post_layernorm.*",
        "clip.visual_projection.*",
        "clip.logit_scale",
        "*.position_ids",
    ]


def find_weights(src: str) -> str:
    return rules.find_weights(src, WEIGHT_FILES)


def load_into(model: CLIPSeg, state_dict: dict, source: str) -> rules.ConversionReport:
    return rules.convert_state_dict(model, state_dict, drop=dropped_keys(model.config), source=source)


def convert(src: str, dst: str) -> rules.ConversionReport:
    """Converts the transformers CLIPSeg folder ``src`` into a medvlsm-jax folder ``dst``."""
    cfg_path = os.path.join(src, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{src}: config.json not found (expected a transformers model folder)")
    with open(cfg_path) as f:
        cfg = config_from_hf(json.load(f))
    wpath = find_weights(src)
    model = CLIPSeg(cfg, rngs=nnx.Rngs(0))
    report = load_into(model, torch_io.load_state_dict(wpath), source=wpath)
    has_tok = all(os.path.exists(os.path.join(src, n)) for n in ("vocab.json", "merges.txt"))
    tok = ClipTokenizer.from_dir(src) if has_tok else ClipTokenizer.default()
    contract = SPEC.resolve_contract(cfg)
    weights.save_model(dst, "clipseg", cfg.to_dict(), model,
                       extra={"source": os.path.abspath(src), "tokenizer_source": "src" if has_tok else "default",
                              "contract": contract.to_dict()})
    tok.save(os.path.join(dst, weights.TOKENIZER_DIR))
    return report
