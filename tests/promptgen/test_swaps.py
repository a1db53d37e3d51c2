"""Attribute swaps (paper Fig. 3)."""

import numpy as np
import pytest

from medvlsm_jax.promptgen import AttributeSwap, PromptGenError, swap_attribute
from medvlsm_jax.promptgen.swaps import UNCOMMON_WORDS

P6 = "one small white circle polyp, located in top left, right of the image"


@pytest.mark.parametrize("attribute,expected", [
    ("size", "one large white circle polyp, located in top left, right of the image"),
    ("location", "one small white circle polyp, located in bottom right, left of the image"),
    ("colour", "one small black circle polyp, located in top left, right of the image"),
    ("color", "one small black circle polyp, located in top left, right of the image"),
    ("shape", "one small white square polyp, located in top left, right of the image"),
])
def test_opposite_values(attribute, expected):
    assert swap_attribute(P6, "kvasir_polyp", "p6", attribute, "other_value") == expected


def test_other_value_without_opposite_changes_value():
    rng = np.random.default_rng(3)
    for _ in range(10):
        out = swap_attribute(P6, "kvasir_polyp", "p6", "number", "other_value", rng)
        assert out.endswith(" small white circle polyp, located in top left, right of the image")
        assert not out.startswith("one ")


def test_random_word_is_seeded_and_replaces_only_the_span():
    a = swap_attribute(P6, "kvasir_polyp", "p6", "shape", "random_word", np.random.default_rng(1))
    b = swap_attribute(P6, "kvasir_polyp", "p6", "shape", "random_word", np.random.default_rng(1))
    assert a == b
    word = a[len("one small white "):-len(" polyp, located in top left, right of the image")]
    assert word in UNCOMMON_WORDS


def test_busi_keeps_capitalisation_and_class_swap():
    p = "One small circle-shaped benign tumor at the top in the breast ultrasound image."
    assert swap_attribute(p, "busi", "p6", "tumor_type", "other_value") == \
        "One small circle-shaped malignant tumor at the top in the breast ultrasound image."
    out = swap_attribute(p, "busi", "p6", "number", "random_word")
    assert out[0].isupper() and out.endswith(" small circle-shaped benign tumor at the top in "
                                             "the breast ultrasound image.")
    assert swap_attribute(p, "busi", "p6", "location", "other_value").endswith(
        "at the bottom in the breast ultrasound image.")


def test_camus_and_chex():
    p = ("Myocardium in two-chamber view of the heart at end of the systole cycle of a "
         "seventy-one-year-old female.")
    assert "four-chamber" in swap_attribute(p, "camus", "p5", "chambers", "other_value")
    assert "diastole" in swap_attribute(p, "camus", "p5", "cycle", "other_value")
    assert "old male." in swap_attribute(p, "camus", "p5", "sex", "other_value")
    c = "Edema in the frontal view of a Chest Xray."
    assert swap_attribute(c, "chexlocalize", "p2", "view", "other_value") == \
        "Edema in the lateral view of a Chest Xray."


def test_transform_on_list_prompts():
    swap = AttributeSwap("kvasir_polyp", "p9", "size", "other_value", seed=0)
    prompts = ["one small pink round polyp which is a projecting growth of tissue located in "
               "center of the image"] * 2
    assert all(" large pink " in p for p in swap(prompts))


def test_errors_name_the_problem():
    with pytest.raises(PromptGenError, match="no attribute 'location'"):
        swap_attribute("small pink round polyp", "kvasir_polyp", "p4", "location")
    with pytest.raises(PromptGenError, match="does not follow the template"):
        swap_attribute("a totally different prompt", "kvasir_polyp", "p4", "size")
    with pytest.raises(PromptGenError, match="unknown swap mode"):
        swap_attribute(P6, "kvasir_polyp", "p6", "size", "flip")
