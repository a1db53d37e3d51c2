"""Evaluation with swapped prompt attributes (the paper's Fig. 3).

A swap run tests a finished ``train`` run's best checkpoint on the test split of each of its
``eval.datasets`` with the prompts of its ``prompt_key`` transformed by
:class:`medvlsm_jax.promptgen.swaps.AttributeSwap` (one attribute's value replaced by a random
uncommon word, or by another value of the attribute), re-tokenized per batch. A prompt that does
not carry the attribute (an empty mask's "no polyp", the other wording of a paired BUSI prompt)
is left as it is and counted; the result records how many prompts were swapped.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from medvlsm_jax.evaluation import evaluate as evaluate_lib
from medvlsm_jax.promptgen.errors import PromptGenError
from medvlsm_jax.promptgen.swaps import AttributeSwap
from medvlsm_jax.train import checkpoint as ckpt_lib
from medvlsm_jax.train import loop
from medvlsm_jax.train.run import Run, eval_datasets


@dataclasses.dataclass
class SwappedLoader:
    """Iterates ``loader``'s batches with each valid row's prompt swapped and re-tokenized."""

    loader: Any
    swap: AttributeSwap
    tokenizer: Any
    max_length: int
    swapped: int = 0
    unchanged: int = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for batch in self.loader:
            prompts = []
            for prompt, valid in zip(batch["prompt"], batch["valid"]):
                prompt = str(prompt)
                if valid:
                    try:
                        new = self.swap(prompt)
                    except PromptGenError:
                        new = prompt
                    self.swapped += new != prompt
                    self.unchanged += new == prompt
                    prompt = new
                prompts.append(prompt)
            batch = dict(batch)
            batch["prompt"] = np.asarray(prompts, dtype=object)
            if self.tokenizer is not None:
                enc = self.tokenizer(prompts, max_length=self.max_length)
                batch["input_ids"] = np.asarray(enc["input_ids"], np.int32)
                batch["attention_mask"] = np.asarray(enc["attention_mask"], np.int32)
            yield batch


def restore_trained(run: Run, train_dir: str) -> Any:
    """The best (else latest) state of the train run in ``train_dir``."""
    ckpts = ckpt_lib.Checkpoints(train_dir)
    try:
        restored = ckpts.restore_best(run.init_state, run.replicated) or ckpts.restore_latest(
            run.init_state, run.replicated)
    finally:
        ckpts.close()
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {train_dir}/checkpoints: the train run a swap "
                                "evaluates has not run")
    return restored[0]


def evaluate_swapped(run: Run, state: Any, out_dir: str, swap: dict[str, Any]) -> dict[str, Any]:
    """Tests ``state`` on ``run.config``'s test sets with ``swap`` (prompt_key, attribute, mode,
    seed) applied to every prompt; writes the usual summary files under ``out_dir``."""
    c = run.config
    results = {}
    text = run.contract.text
    for name in eval_datasets(c):
        loader = loop.make_loader(run, name, "test", c.eval.batch_size, train=False)
        swapped = SwappedLoader(loader, AttributeSwap(name, swap["prompt_key"], swap["attribute"], swap["mode"],
                                                      int(swap.get("seed", 0))),
                                run.tokenizer, text.max_length if text is not None else 0)
        res = evaluate_lib.evaluate_loader(
            loop.predictor(run, state), swapped, split="test", data_dir=c.data.data_dir or None,
            threshold=run.threshold, resize_mode=c.eval.resize, gt_threshold=c.eval.get("gt_threshold", 0),
            out_dir=os.path.join(out_dir, name),
            write_masks=False, with_hd95=c.eval.hd95, progress=False)
        res["swap_counts"] = {"swapped": swapped.swapped, "unchanged": swapped.unchanged}
        results[name] = res
    evaluate_lib.write_summary(results, out_dir)
    return results
