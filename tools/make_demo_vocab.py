"""Writes ``medvlsm_jax/assets/bert_demo/``: the small uncased WordPiece vocabulary of the tiny
BiomedCLIPSeg (``variant=tiny``, ``vocab="demo"``) used by the quick start and the tests, where
no BiomedCLIP download exists.

The vocabulary is: BERT's five special tokens; every lowercase ASCII letter, digit and
punctuation mark, each also as a ``##`` continuation (so any ASCII text tokenises without
``[UNK]``); and every whole word of the prompts P0-P9 that ``medvlsm-prompts`` renders for the
two synthetic datasets (the demo's 300 images each, seed 0), sorted. Rerun after changing the
prompt templates::

    python tools/make_demo_vocab.py
"""

from __future__ import annotations

import json
import pathlib
import re
import string
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medvlsm_jax.promptgen.synthetic import NAMES, write_synthetic_dataset  # noqa: E402

OUT = ROOT / "medvlsm_jax" / "assets" / "bert_demo"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def prompts(root: pathlib.Path) -> list[str]:
    texts = []
    for name in NAMES:
        ds = write_synthetic_dataset(root, name, n_train=200, n_val=50, n_test=50, size=(128, 128))
        for split in ("train", "val", "test"):
            for rec in json.loads((ds / "anns" / f"{split}.json").read_text()):
                for value in rec["prompts"].values():
                    texts.extend(value if isinstance(value, list) else [value])
    return texts


def main() -> None:
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    with tempfile.TemporaryDirectory() as tmp:
        words = sorted({w for t in prompts(pathlib.Path(tmp)) for w in re.findall(r"[a-z0-9]+", t.lower())})
    vocab = list(dict.fromkeys(SPECIALS + chars + [f"##{c}" for c in chars] + words))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vocab.txt").write_text("".join(f"{t}\n" for t in vocab), "utf-8")
    (OUT / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 256}, indent=2) + "\n")
    print(f"{OUT}: {len(vocab)} tokens ({len(words)} words)")


if __name__ == "__main__":
    main()
