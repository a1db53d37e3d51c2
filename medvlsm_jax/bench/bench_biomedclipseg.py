"""BiomedCLIPSeg's PyTorch reference for ``medvlsm-bench`` (and the builder the parity tests use).

    medvlsm-bench models --models biomedclipseg --modes inference,frozen --torch

The reference is real code, built offline with random weights: open_clip's ``CustomTextCLIP``
from a registered BiomedCLIP model config whose ``hf_model_name`` is a local folder holding a
``BertConfig`` (timm ViT + transformers BERT), inside :class:`MedvlsmBiomedCLIPSeg`, medvlsm's
module reconstructed line for line (with transformers' CLIPSeg decoder, as medvlsm uses it).
``tests/conversion/test_biomedclipseg_conversion.py`` imports the same builders
(:func:`build_open_clip`, :func:`clipseg_folder`, :func:`randomise_norms_and_biases`,
:func:`sane_decoder`) to check the Flax port against it.

Sizes: ``base`` = BiomedCLIP (timm ``vit_base_patch16_224`` + BERT-base, 512-d embeddings) with
the rd64-refined decoder (medvlsm taps hidden_states[i + 1] for CLIPSeg's 3/6/9 = blocks 4/7/10);
``tiny`` = :func:`medvlsm_jax.models.biomedclipseg.tiny` (a registered 5 x 32 timm ViT, a 2 x 32
BERT). Inputs as the model's contract: 224², BERT ids of 256 tokens with their attention mask.

Modes, as medvlsm runs them:

* ``inference``: ``model.eval()`` under ``torch.inference_mode``; ``bf16`` = autocast (AMP);
* ``frozen`` (medvlsm's only training mode: ``freeze_encoder: true``): medvlsm's ``forward`` in
  train mode (BERT under autograd but frozen, its dropout active as in medvlsm), with the ViT under
  ``torch.no_grad`` where medvlsm writes ``torch.inference_mode`` (current PyTorch refuses to train
  the decoder on inference-mode tensors: :func:`frozen_forward`), soft Dice on ``sigmoid(logits)`` (``paper_faithful``), gradient clipping
  0.5 and AdamW(lr 2e-3, weight decay 1e-3) on the decoder (the released recipe;
  ``TRAIN_OVERRIDES`` gives the Flax trainer the same);
* ``full``: no reference (medvlsm's forward runs the image tower under ``inference_mode``, so it
  cannot train it): the row is skipped with that reason.
"""

from __future__ import annotations

import functools
import json
import pathlib
import tempfile
from typing import Any, Callable, Optional

import numpy as np

from medvlsm_jax.bench import torch_steps
from medvlsm_jax.bench.bench_clipseg import GRAD_CLIP, LR, WEIGHT_DECAY, soft_dice

# the released recipe's optimiser (medvlsm configs/model/biomed_clipseg.yaml + scripts/default_configs.py)
TRAIN_OVERRIDES = {"optimizer": "adamw", "lr": LR, "weight_decay": WEIGHT_DECAY, "grad_clip": GRAD_CLIP,
                   "loss": "paper_faithful"}
SKIPPED_MODES = {"full": "no PyTorch reference: medvlsm's forward runs the image tower under inference_mode"}

WORDS = ("a one two medium small large pink red round oval polyp polyps located in at the top bottom left right "
         "of image tumor lesion , .").split()
TINY_VIT = "medvlsm_tiny_vit_patch16_224"  # = medvlsm_jax.models.biomedclipseg.tiny()'s image tower

# variant -> (timm model, embed_dim, BertConfig kwargs, CLIPSeg extract_layers, decoder kwargs)
BERT_TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=256)
RD64 = dict(reduce_dim=64, decoder_num_attention_heads=4, decoder_intermediate_size=2048, conditional_layer=0)
VARIANTS = {
    "base": ("vit_base_patch16_224", 512, {}, [3, 6, 9], RD64),  # BertConfig defaults = BERT-base
    "tiny": (TINY_VIT, 32, BERT_TINY, [1, 2, 3],
             dict(reduce_dim=16, decoder_num_attention_heads=2, decoder_intermediate_size=32, conditional_layer=0)),
}


# --------------------------------------------------------------------------- medvlsm's module


@functools.cache
def _medvlsm_class():
    import open_clip
    import torch
    from open_clip.hf_model import ClsPooler
    from torch import nn
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    class MedvlsmBiomedCLIPSeg(nn.Module):
        """medvlsm ``src/models/biomedclipseg.py`` (naamiinepal/medvlsm@dc36a3a), line for line.

        Only the model sources change: ``biomedclip_hf_api`` is an open_clip ``local-dir:`` folder
        (or a registered model name) and ``clipseg_hf_api`` a local CLIPSeg folder instead of hub names.
        """

        def __init__(self, biomedclip_hf_api: str, clipseg_hf_api: str, freeze_encoder: bool = True,
                     freeze_decoder: bool = False, rand_init_decoder: bool = True):
            super().__init__()
            self.biomedclip = open_clip.create_model(biomedclip_hf_api)
            self.clip_seg_config = CLIPSegConfig.from_pretrained(clipseg_hf_api)
            if rand_init_decoder:
                self.decoder = CLIPSegForImageSegmentation(self.clip_seg_config).decoder
            else:
                self.decoder = CLIPSegForImageSegmentation.from_pretrained(clipseg_hf_api).decoder
            self.biomedclip.requires_grad_(not freeze_encoder)
            self.decoder.requires_grad_(not freeze_decoder)

        def _forward_vit(self, x, output_hidden_states: bool = True):
            ViT = self.biomedclip.visual.trunk  # noqa: N806
            x = ViT.patch_embed(x)
            x = ViT._pos_embed(x)
            x = ViT.norm_pre(x)
            hidden_states = []
            for i, block in enumerate(ViT.blocks):
                x = block(x)
                hidden_states.append(x)
            x = ViT.norm(x)
            if ViT.global_pool:
                x = x[:, ViT.num_prefix_tokens:].mean(dim=1) if ViT.global_pool == "avg" else x[:, 0]
            x = ViT.fc_norm(x)
            x = ViT.head(x)
            # Linear Projection: 768 -> 512
            x = self.biomedclip.visual.head(x)
            if output_hidden_states:
                return x, hidden_states
            else:
                return x

        def _forward_bert(self, x, attention_mask: Optional[torch.LongTensor] = None,
                          output_hidden_states: bool = False):
            bert = self.biomedclip.text
            if attention_mask is None:
                attention_mask = (x != bert.config.pad_token_id).long()
            out = bert.transformer(input_ids=x, attention_mask=attention_mask,
                                   output_hidden_states=output_hidden_states)
            pooled_out = bert.pooler(out, attention_mask)
            projected = bert.proj(pooled_out)
            seq_len = out.last_hidden_state.shape[1]
            tokens = (
                out.last_hidden_state[:, torch.arange(seq_len) != bert.pooler.cls_token_position, :]
                if type(bert.pooler) == ClsPooler  # noqa: E721
                else out.last_hidden_state
            )
            if bert.output_tokens:
                return projected, tokens
            if output_hidden_states:
                return projected, out.hidden_states
            else:
                return projected

        def get_conditional_embeddings(self, batch_size: int, input_ids: torch.Tensor, attention_mask: torch.Tensor):
            if len(input_ids) != batch_size:
                raise ValueError("Make sure to pass as many prompt texts as there are query images")
            return self._forward_bert(input_ids, attention_mask=attention_mask, output_hidden_states=False)

        def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
            with torch.inference_mode():
                pooled_output, hidden_states = self._forward_vit(pixel_values, output_hidden_states=True)
                # we add +1 here as the hidden states also include the initial embeddings
                activations = [hidden_states[i + 1] for i in self.clip_seg_config.extract_layers]
            conditional_embeddings = self.get_conditional_embeddings(
                batch_size=pixel_values.shape[0], input_ids=input_ids, attention_mask=attention_mask)
            decoder_outputs = self.decoder(activations, conditional_embeddings)
            logits = decoder_outputs.logits
            return logits[:, None]

    return MedvlsmBiomedCLIPSeg


def __getattr__(name: str) -> Any:  # the class needs torch: built on first use
    if name == "MedvlsmBiomedCLIPSeg":
        return _medvlsm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- building the reference


def register_tiny_vit() -> str:
    """Registers :data:`TINY_VIT` with timm (idempotent): a 5 x 32 ViT-B/16-shaped tower, 2 heads, MLP 64."""
    import timm
    from timm.models import register_model
    from timm.models.vision_transformer import _create_vision_transformer

    if not timm.models.is_model(TINY_VIT):
        def medvlsm_tiny_vit_patch16_224(pretrained: bool = False, **kwargs):
            args = dict(patch_size=16, embed_dim=32, depth=5, num_heads=2, mlp_ratio=2.0)
            return _create_vision_transformer("vit_tiny_patch16_224", pretrained=pretrained, **dict(args, **kwargs))
        register_model(medvlsm_tiny_vit_patch16_224)
    return TINY_VIT


def randomise_norms_and_biases(module, seed: int) -> None:
    """Every LayerNorm scale/bias and every bias random; the class token random too (timm sets
    it to 1e-6 * N(0, 1))."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    rand = lambda p, std: torch.randn(p.shape, generator=gen) * std  # noqa: E731
    with torch.no_grad():
        for name, p in module.named_parameters():
            if isinstance(module.get_submodule(name.rpartition(".")[0]), nn.LayerNorm) and name.endswith("weight"):
                p.copy_(1.0 + rand(p, 0.2))
            elif name.endswith("bias"):
                p.copy_(rand(p, 0.05))
            elif name.endswith("cls_token"):
                p.copy_(rand(p, 0.02))


def sane_decoder(decoder, seed: int) -> None:
    """PyTorch's default init for the decoder's Linear/conv weights, then random norms and biases,
    and a last layer scaled to logits of std ~1. (transformers 5 draws those weights from N(0, 1),
    which puts the logits in the thousands, where the float32 rounding of the reference itself
    exceeds the tolerance.)"""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    for module in decoder.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()
    randomise_norms_and_biases(decoder, seed + 1)
    head = decoder.transposed_convolution
    with torch.no_grad():  # logits of std ~1, so that the tolerance is not loose
        (head[-1] if isinstance(head, nn.Sequential) else head).weight.mul_(20.0)


def write_vocab(folder: pathlib.Path, extra=()) -> None:
    """A BERT vocabulary: specials first (BiomedBERT's order), letters, continuations, words."""
    letters = "abcdefghijklmnopqrstuvwxyz0123456789,."
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters),
              *WORDS, *extra]
    (folder / "vocab.txt").write_text("".join(f"{t}\n" for t in dict.fromkeys(tokens)))
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))


def open_clip_config(bert_dir: pathlib.Path, *, timm_model: str, embed_dim: int) -> dict[str, Any]:
    """BiomedCLIP's open_clip model config with the text tower read from the local ``bert_dir``."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"timm_model_name": timm_model, "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "image_size": 224},
        "text_cfg": {"hf_model_name": str(bert_dir), "hf_tokenizer_name": str(bert_dir), "hf_proj_type": "mlp",
                     "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 256},
    }


def register_open_clip(tmp: pathlib.Path, name: str, *, timm_model: str, embed_dim: int, bert: dict) -> dict:
    """Writes ``tmp/bert`` (a ``BertConfig``) and registers open_clip model ``name`` on it."""
    import transformers
    from open_clip import factory as open_clip_factory

    if timm_model == TINY_VIT:
        register_tiny_vit()
    bert_dir = tmp / "bert"
    transformers.BertConfig(**bert).save_pretrained(bert_dir)
    model_cfg = open_clip_config(bert_dir, timm_model=timm_model, embed_dim=embed_dim)
    open_clip_factory._MODEL_CONFIGS[name] = model_cfg
    return model_cfg


def build_open_clip(tmp: pathlib.Path, name: str, *, timm_model: str, embed_dim: int, bert: dict, seed: int,
                    safetensors: bool):
    """An open_clip BiomedCLIP-style model, random, saved as an open_clip folder under ``tmp/src``."""
    import open_clip
    import torch

    model_cfg = register_open_clip(tmp, name, timm_model=timm_model, embed_dim=embed_dim, bert=bert)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None, pretrained_image=False, pretrained_text=False)
    randomise_norms_and_biases(model, seed + 1)
    src = tmp / "src"
    src.mkdir()
    (src / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }))
    if safetensors:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, src / "open_clip_model.safetensors")
    else:
        torch.save(model.state_dict(), src / "open_clip_pytorch_model.bin")
    write_vocab(src)
    return src, model


def clipseg_config(*, vision_hidden: int, projection_dim: int, extract_layers=(3, 6, 9), **decoder):
    """A transformers CLIPSeg config whose decoder has the given shape (small CLIP towers: medvlsm
    reads only the decoder)."""
    from transformers import CLIPSegConfig

    return CLIPSegConfig(
        text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32},
        vision_config={"hidden_size": vision_hidden, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "intermediate_size": 32, "image_size": 224, "patch_size": 16},
        projection_dim=projection_dim, extract_layers=list(extract_layers), use_complex_transposed_convolution=True,
        **decoder)


def clipseg_folder(path: pathlib.Path, *, vision_hidden: int, projection_dim: int, seed: int, **decoder) -> None:
    """A transformers CLIPSeg folder whose decoder has the given shape; see :func:`sane_decoder`."""
    import torch
    from transformers import CLIPSegForImageSegmentation

    cfg = clipseg_config(vision_hidden=vision_hidden, projection_dim=projection_dim, **decoder)
    torch.manual_seed(seed)
    model = CLIPSegForImageSegmentation(cfg)
    sane_decoder(model.decoder, seed + 1)
    model.save_pretrained(path)


def torch_model(variant: str, device: str, seed: int = 0):
    """medvlsm's ``BiomedCLIPSeg`` of ``variant`` (base | tiny), random init (fresh decoder, as
    BiomedCLIPSeg), encoders frozen as medvlsm's ``freeze_encoder: true``."""
    import torch

    if variant not in VARIANTS:
        raise KeyError(f"no BiomedCLIPSeg reference for variant {variant!r}; choose {' or '.join(VARIANTS)}")
    timm_model, embed_dim, bert, extract, decoder = VARIANTS[variant]
    vision_hidden = 768 if variant == "base" else 32
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        # medvlsm's open_clip.create_model(name) loads BERT's weights: an open_clip folder it reads
        src, _ = build_open_clip(tmp, f"medvlsm-bench-biomedclip-{variant}", timm_model=timm_model,
                                 embed_dim=embed_dim, bert=bert, seed=seed, safetensors=True)
        clipseg_config(vision_hidden=vision_hidden, projection_dim=embed_dim, extract_layers=extract,
                       **decoder).save_pretrained(tmp / "clipseg")
        torch.manual_seed(seed + 2)
        model = _medvlsm_class()(f"local-dir:{src}", str(tmp / "clipseg"), freeze_encoder=True,
                                 rand_init_decoder=True)
    return model.to(device)


# --------------------------------------------------------------------------- the steps


def frozen_forward(model, pixel_values, input_ids, attention_mask):
    """medvlsm's ``forward`` with the image tower under ``torch.no_grad`` instead of
    ``torch.inference_mode``: the same computation, but the decoder can be trained on the taps
    (PyTorch refuses to save inference-mode tensors for backward: "Inference tensors cannot be
    saved for backward")."""
    import torch

    with torch.no_grad():
        _, hidden_states = model._forward_vit(pixel_values, output_hidden_states=True)
        activations = [hidden_states[i + 1] for i in model.clip_seg_config.extract_layers]
    cond = model.get_conditional_embeddings(batch_size=pixel_values.shape[0], input_ids=input_ids,
                                            attention_mask=attention_mask)
    return model.decoder(activations, cond).logits[:, None]


def reference_step(model, mode: str, batch: dict[str, np.ndarray], *, device: str, amp: bool,
                   compile_model: bool = False) -> Callable[[], Any]:
    """A zero-argument PyTorch step of ``mode`` (inference | frozen) on ``batch``."""
    import torch

    t = torch_steps.to_torch(batch, device)
    fwd = torch.compile(model) if compile_model else model
    if mode == "inference":
        model.eval()

        def infer():
            with torch.inference_mode(), torch_steps.autocast(device, amp):
                return fwd(t["pixel_values"], t["input_ids"], t["attention_mask"])
        return infer
    if mode != "frozen":
        raise ValueError(f"no BiomedCLIPSeg reference for mode {mode!r}: {SKIPPED_MODES.get(mode, 'unknown mode')}")
    model.train()  # as Lightning: BERT's dropout active, encoders frozen
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)

    step_fwd = lambda: frozen_forward(model, t["pixel_values"], t["input_ids"], t["attention_mask"])  # noqa: E731
    if compile_model:
        step_fwd = torch.compile(step_fwd)
    return torch_steps.train_step(lambda: soft_dice(step_fwd()[:, 0], t["mask"]), params, opt,
                                  grad_clip=GRAD_CLIP, device=device, amp=amp)
