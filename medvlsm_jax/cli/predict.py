"""``medvlsm-predict``: segment images (with a text prompt, unless the model is image-only); writes a
mask and an overlay per image.

Every input is processed; the ones that cannot be read are listed at the end (exit code 1 when
any failed). Outputs are ``<stem>_mask.png`` and ``<stem>_overlay.png``, made unique when two
inputs share a file name (``<stem>-2_mask.png``...). ``--checkpoint`` takes a model folder or a
training workdir (its ``export/``).
"""

from __future__ import annotations

import argparse
import os
import sys

from medvlsm_jax.cli.common import add_verbose, guard


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside (0, 1); a probability threshold such as 0.5")
    return value


def resolve_checkpoint(path: str) -> str:
    """The model folder of ``path``: itself when it holds ``model.json``, else its ``export/``
    (a training workdir); a clear error otherwise."""
    from medvlsm_jax import weights  # noqa: PLC0415

    if not os.path.exists(path):
        raise FileNotFoundError(f"--checkpoint {path} does not exist; give a folder written by medvlsm-convert "
                                "or a training workdir")
    if os.path.isfile(os.path.join(path, weights.MODEL_JSON)):
        return path
    export = os.path.join(path, "export")
    if os.path.isfile(os.path.join(export, weights.MODEL_JSON)):
        print(f"using the exported model {export}", file=sys.stderr)
        return export
    hint = (" (a training workdir without export/: training has not finished; rerun it to export)"
            if os.path.isdir(os.path.join(path, "checkpoints")) else "")
    raise FileNotFoundError(f"--checkpoint {path} holds no {weights.MODEL_JSON}{hint}; give a folder written by "
                            "medvlsm-convert or a training workdir (its export/ is used)")


def output_stems(paths: list[str]) -> list[str]:
    """One unique output stem per input: the file's stem, with ``-2``, ``-3``... appended to
    repeats (also when the stem itself ends like that)."""
    used: set[str] = set()
    stems = []
    for path in paths:
        stem = base = os.path.splitext(os.path.basename(path))[0] or "image"
        n = 1
        while stem in used:
            n += 1
            stem = f"{base}-{n}"
        used.add(stem)
        stems.append(stem)
    return stems


def _run(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    import medvlsm_jax  # noqa: PLC0415
    from medvlsm_jax.evaluation.visualize import overlay  # noqa: PLC0415

    seg = medvlsm_jax.load(resolve_checkpoint(args.checkpoint))
    if (args.prompt is None) == seg.takes_text:
        raise ValueError(f"{seg.family} {'needs' if seg.takes_text else 'takes no'} --prompt")
    if seg.takes_text:
        n = len(seg.tokenizer.encode(args.prompt))
        limit = seg.contract.text.max_length
        if n > limit:
            print(f"warning: the prompt has {n} tokens (with start and end); the model reads {limit}, so it is "
                  f"cut after {limit - 2} text tokens", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    failed: list[tuple[str, str]] = []
    for path, stem in zip(args.image, output_stems(args.image)):
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as err:  # missing, not an image, truncated
            reason = "not an image file" if isinstance(err, UnidentifiedImageError) else str(err)
            failed.append((path, reason))
            continue
        prompts = [args.prompt] if seg.takes_text else None
        (mask,) = seg.predict([image], prompts, threshold=args.threshold)
        mask_path = os.path.join(args.out, f"{stem}_mask.png")
        overlay_path = os.path.join(args.out, f"{stem}_overlay.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
        overlay(image, mask).save(overlay_path)
        print(f"{path}: {int(mask.sum())} foreground pixels ({mask.mean():.1%}) -> {mask_path}, {overlay_path}")
    if failed:
        print(f"medvlsm-predict: {len(failed)} of {len(args.image)} inputs failed:", file=sys.stderr)
        for path, reason in failed:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="medvlsm-predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="model folder (medvlsm-convert or a training run's export), or a training workdir")
    p.add_argument("--image", required=True, nargs="+", help="image file(s)")
    p.add_argument("--prompt", default=None, help="text prompt, e.g. 'polyp' (none for image-only models)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threshold", type=_threshold, default=None,
                   help="probability threshold in (0, 1); default: the model's (0.5; CRIS 0.35)")
    add_verbose(p)
    args = p.parse_args(argv)
    return guard("medvlsm-predict", lambda: _run(args), argv)


if __name__ == "__main__":
    sys.exit(main())
