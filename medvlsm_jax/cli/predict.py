"""``medvlsm-predict``: segment images (with a text prompt, unless the model is image-only);
writes the mask and an overlay."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image

from medvlsm_jax.evaluation.visualize import overlay


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="medvlsm-predict", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="model folder (medvlsm-convert or a training run's export)")
    p.add_argument("--image", required=True, nargs="+", help="image file(s)")
    p.add_argument("--prompt", default=None, help="text prompt, e.g. 'polyp' (none for image-only models)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threshold", type=float, default=None, help="default: the model's (0.5; CRIS 0.35)")
    args = p.parse_args(argv)

    import medvlsm_jax

    seg = medvlsm_jax.load(args.checkpoint)
    if (args.prompt is None) == seg.takes_text:
        p.error(f"{seg.family} {'needs' if seg.takes_text else 'takes no'} --prompt")
    os.makedirs(args.out, exist_ok=True)
    for path in args.image:
        with Image.open(path) as im:
            image = im.convert("RGB")
        prompts = [args.prompt] if seg.takes_text else None
        (mask,) = seg.predict([image], prompts, threshold=args.threshold)
        stem = os.path.splitext(os.path.basename(path))[0]
        mask_path = os.path.join(args.out, f"{stem}_mask.png")
        overlay_path = os.path.join(args.out, f"{stem}_overlay.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
        overlay(image, mask).save(overlay_path)
        print(f"{path}: {int(mask.sum())} foreground pixels ({mask.mean():.1%}) -> {mask_path}, {overlay_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
