"""open_clip BiomedCLIP folder (+ CLIPSeg decoder, + medvlsm checkpoint) -> medvlsm-jax folder.

``medvlsm-convert biomedclipseg SRC DST [--decoder CLIPSEG_DIR] [--checkpoint CKPT] [--seed N]``

* ``SRC``: a local open_clip folder as ``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``
  holds it: ``open_clip_config.json`` (``model_cfg`` with a timm image tower and a Hugging Face
  BERT text tower), ``open_clip_pytorch_model.bin`` or a ``.safetensors`` file (read with
  ``weights_only=True``), and the tokenizer files (``tokenizer.json`` and/or ``vocab.txt``,
  ``tokenizer_config.json``).

  The timm tower's hyper-parameters not visible in the tensors (heads, LayerNorm eps) come from
  timm's definition of ``timm_model_name`` (built on the meta device, no weights); the BERT ones
  from ``hf_model_name``'s ``config.json`` when it is a local folder, else BERT-base's
  (BiomedBERT's: 64-dim heads, eps 1e-12, dropout 0.1, pad id 0). Sizes come from the tensors.
* ``--decoder``: a transformers CLIPSeg folder (``CIDAS/clipseg-rd64-refined``); its
  ``decoder.*`` weights and decoder hyper-parameters make BiomedCLIPSeg-D. Without it the decoder
  has the rd64-refined shape and a fresh initialisation from ``--seed``, transformers 4.35's (the
  version medvlsm pins; see :func:`fresh_decoder`) (BiomedCLIPSeg).
* ``--checkpoint``: a model trained with medvlsm, a Lightning ``.ckpt`` (``state_dict`` keys
  ``net.biomedclip.*`` / ``net.decoder.*``) or a plain state dict of its ``BiomedCLIPSeg`` module;
  its tensors replace those of SRC (and of ``--decoder``). The decoder's hyper-parameters are
  rd64-refined's unless ``--decoder`` gives them.

The taps follow medvlsm: CLIPSeg's ``extract_layers`` 3/6/9 read ViT blocks 4/7/10 (see
:mod:`medvlsm_jax.models.biomedclipseg`); every block is converted. ``logit_scale`` and the
``position_ids``/``token_type_ids`` buffers some checkpoints carry are dropped.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
from flax import nnx

from medvlsm_jax import weights
from medvlsm_jax.data.bert_tokenizer import BertTokenizer
from medvlsm_jax.models.biomedclipseg import SPEC, BiomedCLIPSeg, BiomedCLIPSegConfig
from medvlsm_jax.conversion import clipseg as clipseg_conversion
from medvlsm_jax.conversion import rules, torch_io

CONFIG_FILE = "open_clip_config.json"
# open_clip's preferred order (factory._find_checkpoint_in_dir)
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
RD64_VISION_LAYERS = 12  # CIDAS/clipseg-rd64-refined: its vision depth scales the decoder's initialisation
DROP = ("biomedclip.logit_scale", "biomedclip.logit_bias", "*.position_ids", "*.token_type_ids")
_V = "biomedclip.visual.trunk."
_T = "biomedclip.text.transformer."


def find_weights(src: str) -> str:
    return rules.find_weights(src, WEIGHT_FILES)


def read_model_cfg(src: str) -> dict[str, Any]:
    path = os.path.join(src, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{src}: {CONFIG_FILE} not found (expected an open_clip model folder)")
    with open(path) as f:
        try:
            cfg = json.load(f)
        except json.JSONDecodeError as e:
            raise rules.ConversionError(f"{path}: invalid JSON ({e})") from None
    model_cfg = cfg.get("model_cfg")
    if not isinstance(model_cfg, dict):
        raise rules.ConversionError(f"{path}: no 'model_cfg'")
    if "timm_model_name" not in model_cfg.get("vision_cfg", {}):
        raise rules.ConversionError(f"{path}: vision_cfg has no timm_model_name (BiomedCLIP uses a timm ViT)")
    if "hf_model_name" not in model_cfg.get("text_cfg", {}):
        raise rules.ConversionError(f"{path}: text_cfg has no hf_model_name (BiomedCLIP uses a BERT text tower)")
    return model_cfg


def _count(sd: dict, prefix: str) -> int:
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in sd):
        n += 1
    return n


def _shape(sd: dict, key: str, where: str) -> tuple[int, ...]:
    if key not in sd:
        raise rules.ConversionError(f"{where}: {key} is missing")
    return tuple(np.shape(sd[key]))


def _timm_settings(name: str, pool: str) -> dict[str, Any]:
    """Heads and eps of a timm ViT, checking that its structure is the one ported."""
    import timm  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    try:
        with torch.device("meta"):
            vit = timm.create_model(name, pretrained=False)
    except Exception as e:  # noqa: BLE001 - timm raises RuntimeError for unknown names
        raise rules.ConversionError(f"timm_model_name {name!r}: {e}") from None
    block = vit.blocks[0] if hasattr(vit, "blocks") else None
    ported = (
        block is not None and type(vit).__name__ == "VisionTransformer" and type(block).__name__ == "Block"
        and vit.has_class_token and vit.num_prefix_tokens == 1 and not vit.no_embed_class
        and isinstance(vit.norm_pre, nn.Identity) and isinstance(block.ls1, nn.Identity)
        and isinstance(block.attn.q_norm, nn.Identity) and isinstance(block.mlp.act, nn.GELU)
        and block.mlp.act.approximate == "none" and getattr(vit, "attn_pool", None) is None
    )
    if not ported:
        raise rules.ConversionError(f"timm_model_name {name!r} is not a plain class-token ViT (pre-norm blocks, "
                                    "no layer scale, no register tokens), the only image tower ported")
    if (pool or vit.global_pool) != "token":
        raise rules.ConversionError(f"timm_pool {pool!r}: only the class-token pool ('' or 'token') is ported")
    return {"vision_heads": block.attn.num_heads, "vision_eps": float(vit.norm.eps)}


def _bert_settings(hf_model_name: str) -> tuple[dict[str, Any], str]:
    """BERT settings from ``hf_model_name``'s config.json when it is a local folder."""
    path = os.path.join(hf_model_name, "config.json")
    if not os.path.isfile(path):
        return {}, f"{hf_model_name!r} is not a local folder: BERT-base settings assumed"
    with open(path) as f:
        bert = json.load(f)
    if bert.get("model_type", "bert") != "bert":
        raise rules.ConversionError(f"{path}: model_type {bert.get('model_type')!r}; only BERT text towers are ported")
    if bert.get("hidden_act", "gelu") != "gelu":
        raise rules.ConversionError(f"{path}: hidden_act {bert.get('hidden_act')!r}; only 'gelu' is ported")
    if bert.get("position_embedding_type", "absolute") != "absolute":
        raise rules.ConversionError(f"{path}: position_embedding_type {bert['position_embedding_type']!r}; "
                                    "only 'absolute' is ported")
    out = {"text_heads": bert.get("num_attention_heads"), "text_eps": bert.get("layer_norm_eps"),
           "text_dropout": bert.get("hidden_dropout_prob"),
           "text_attention_dropout": bert.get("attention_probs_dropout_prob"),
           "pad_token_id": bert.get("pad_token_id")}
    return {k: v for k, v in out.items() if v is not None}, f"BERT settings from {path}"


def config_from_open_clip(model_cfg: dict[str, Any], sd: dict[str, np.ndarray], where: str
                          ) -> tuple[BiomedCLIPSegConfig, str]:
    """The model config from ``model_cfg`` and the (``biomedclip.``-prefixed) tensors' shapes."""
    vcfg, tcfg = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    if vcfg.get("timm_proj", "linear") != "linear":
        raise rules.ConversionError(f"timm_proj {vcfg.get('timm_proj')!r}: only 'linear' is ported")
    d, _, p, _ = _shape(sd, _V + "patch_embed.proj.weight", where)
    n_pos = _shape(sd, _V + "pos_embed", where)[1] - 1
    grid = int(round(n_pos ** 0.5))
    if grid * grid != n_pos:
        raise rules.ConversionError(f"{where}: {_V}pos_embed holds {n_pos} patch positions, not a square grid")
    vocab, width = _shape(sd, _T + "embeddings.word_embeddings.weight", where)
    fields: dict[str, Any] = dict(
        image_size=grid * p, patch_size=p, vision_width=d, vision_layers=_count(sd, _V + "blocks."),
        vision_mlp_dim=_shape(sd, _V + "blocks.0.mlp.fc1.weight", where)[0],
        vision_proj_bias=bool(vcfg.get("timm_proj_bias", False)), embed_dim=int(model_cfg["embed_dim"]),
        vocab_size=vocab, text_width=width, text_heads=max(1, width // 64),
        max_position_embeddings=_shape(sd, _T + "embeddings.position_embeddings.weight", where)[0],
        type_vocab_size=_shape(sd, _T + "embeddings.token_type_embeddings.weight", where)[0],
        text_layers=_count(sd, _T + "encoder.layer."),
        text_intermediate_size=_shape(sd, _T + "encoder.layer.0.intermediate.dense.weight", where)[0],
        text_pooler=tcfg.get("hf_pooler_type", "mean_pooler"), text_proj=tcfg.get("hf_proj_type", "mlp"),
        context_length=int(tcfg.get("context_length", 77)),
    )
    fields.update(_timm_settings(vcfg["timm_model_name"], vcfg.get("timm_pool", "avg")))
    bert, note = _bert_settings(tcfg["hf_model_name"])
    fields.update(bert)
    try:
        return BiomedCLIPSegConfig(**fields), note
    except TypeError as e:
        raise rules.ConversionError(f"{where}: {e}") from None


def _decoder_fields(clipseg_dir: str, cfg: BiomedCLIPSegConfig) -> dict[str, Any]:
    path = os.path.join(clipseg_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{clipseg_dir}: config.json not found (expected a transformers CLIPSeg folder)")
    with open(path) as f:
        cs = clipseg_conversion.config_from_hf(json.load(f))
    for mine, theirs, what in ((cfg.vision_width, cs.vision_hidden_size, "vision width"),
                               (cfg.embed_dim, cs.projection_dim, "projection dim"),
                               (cfg.patch_size, cs.patch_size, "patch size")):
        if mine != theirs:
            raise rules.ConversionError(f"{clipseg_dir}: the CLIPSeg decoder expects {what} {theirs}, "
                                        f"BiomedCLIP has {mine}")
    return dict(
        # medvlsm: hidden_states[i + 1] of the block outputs, for CLIPSeg's extract_layers
        extract_layers=tuple(i + 1 for i in cs.extract_layers), reduce_dim=cs.reduce_dim,
        decoder_heads=cs.decoder_heads, decoder_intermediate_size=cs.decoder_intermediate_size,
        conditional_layer=cs.conditional_layer, decoder_eps=cs.layer_norm_eps,
        use_complex_transposed_convolution=cs.use_complex_transposed_convolution, decoder_init="clipseg",
    )


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
    """A medvlsm BiomedCLIPSeg state dict from a Lightning ``.ckpt`` or a plain state dict."""
    sd = torch_io.load_state_dict(path)
    if any(k.startswith("net.") for k in sd):  # Lightning: BaseModule.net
        sd = rules.strip_prefix(sd, "net.")
    sd = rules.strip_prefix(sd, "module.")
    if not any(k.startswith(("biomedclip.", "decoder.")) for k in sd):
        raise rules.ConversionError(f"{path}: no biomedclip.* or decoder.* keys; not a medvlsm BiomedCLIPSeg "
                                    "checkpoint")
    return sd


def fresh_decoder(cfg: BiomedCLIPSegConfig, seed: int) -> dict[str, np.ndarray]:
    """medvlsm's random decoder (``CLIPSegForImageSegmentation(config).decoder``), initialised
    after ``torch.manual_seed(seed)`` as transformers 4.35.2, medvlsm's pinned version, does.

    transformers 5 initialises the decoder's FiLM, reduce and convolution weights with N(0, 1)
    (``initializer_factor`` read as a std), which saturates the logits; 4.35 left those at
    PyTorch's defaults and zeroed the Linear biases. Decoder attention and MLP weights are normal
    with CLIP's scaled stds (the vision depth, 12 in rd64-refined, enters them), LayerNorms 1/0.
    """
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415
    from transformers.models.clipseg import modeling_clipseg as hf_clipseg  # noqa: PLC0415

    hf = transformers.CLIPSegConfig(
        vision_config={"hidden_size": cfg.vision_width, "num_hidden_layers": RD64_VISION_LAYERS,
                       "patch_size": cfg.patch_size, "image_size": cfg.image_size, "layer_norm_eps": cfg.decoder_eps},
        projection_dim=cfg.embed_dim, extract_layers=list(cfg.extract_layers),  # only their number matters
        reduce_dim=cfg.reduce_dim, decoder_num_attention_heads=cfg.decoder_heads,
        decoder_intermediate_size=cfg.decoder_intermediate_size, conditional_layer=cfg.conditional_layer,
        use_complex_transposed_convolution=cfg.use_complex_transposed_convolution,
    )
    torch.manual_seed(seed)
    decoder = hf_clipseg.CLIPSegDecoder(hf)
    factor = hf.initializer_factor
    with torch.no_grad():
        for module in decoder.modules():  # PyTorch defaults first (what 4.35 left alone)
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                module.reset_parameters()
        for module in decoder.modules():  # then CLIPSegPreTrainedModel._init_weights of 4.35.2
            if isinstance(module, hf_clipseg.CLIPSegAttention):
                in_std = module.embed_dim ** -0.5 * (2 * RD64_VISION_LAYERS) ** -0.5 * factor
                for proj in (module.q_proj, module.k_proj, module.v_proj):
                    nn.init.normal_(proj.weight, std=in_std)
                nn.init.normal_(module.out_proj.weight, std=module.embed_dim ** -0.5 * factor)
            elif isinstance(module, hf_clipseg.CLIPSegMLP):
                width = module.fc1.in_features
                nn.init.normal_(module.fc1.weight, std=(2 * width) ** -0.5 * factor)
                nn.init.normal_(module.fc2.weight, std=width ** -0.5 * (2 * RD64_VISION_LAYERS) ** -0.5 * factor)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
    return {f"decoder.{k}": v.detach().numpy() for k, v in decoder.state_dict().items()}


def convert(src: str, dst: str, *, decoder: str | None = None, checkpoint: str | None = None,
            seed: int = 0) -> rules.ConversionReport:
    """Converts the open_clip BiomedCLIP folder ``src`` (+ options) into a medvlsm-jax folder ``dst``."""
    model_cfg = read_model_cfg(src)
    wpath = find_weights(src)
    sd = {"biomedclip." + k: v for k, v in rules.strip_prefix(torch_io.load_state_dict(wpath), "module.").items()}
    cfg, note = config_from_open_clip(model_cfg, sd, wpath)
    sources = {"source": os.path.abspath(src), "text_config": note}
    if decoder is not None:
        cfg = dataclasses.replace(cfg, **_decoder_fields(decoder, cfg))
        dpath = clipseg_conversion.find_weights(decoder)
        sd.update({k: v for k, v in torch_io.load_state_dict(dpath).items() if k.startswith("decoder.")})
        sources["decoder_source"] = os.path.abspath(decoder)
    if checkpoint is not None:
        sd.update(read_checkpoint(checkpoint))
        sources["checkpoint"] = os.path.abspath(checkpoint)
    if decoder is None and checkpoint is None:
        sd.update(fresh_decoder(cfg, seed))
        sources["decoder_seed"] = seed
    tok = _tokenizer(src, cfg.context_length)
    # every leaf comes from ``sd``: no initialisation (the strict diff reports anything missing)
    model = nnx.eval_shape(lambda: BiomedCLIPSeg(cfg, rngs=nnx.Rngs(0)))
    where = " + ".join([wpath] + [p for p in (decoder, checkpoint) if p])
    report = rules.convert_state_dict(model, sd, drop=DROP, source=where)
    contract = SPEC.resolve_contract(cfg)
    weights.save_model(dst, "biomedclipseg", cfg.to_dict(), model, extra={**sources, "contract": contract.to_dict()})
    tok.save(os.path.join(dst, weights.TOKENIZER_DIR))
    return report


def _tokenizer(src: str, context_length: int) -> BertTokenizer:
    if not any(os.path.isfile(os.path.join(src, n)) for n in ("tokenizer.json", "vocab.txt")):
        raise FileNotFoundError(f"{src}: no tokenizer.json or vocab.txt (BiomedCLIP's BERT vocabulary is not "
                                "bundled; copy the tokenizer files of the hub folder)")
    return BertTokenizer.from_dir(src, max_length=context_length)
