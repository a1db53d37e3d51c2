"""Prompt generation of the paper (Poudel et al., MIDL 2024): attributes from masks and
metadata, templates P0-P9 per dataset family, medvlsm annotation files, the round-trip check
against the released files, attribute swaps, and synthetic datasets. See README.md here."""

from .datasets import DATASETS, DatasetSpec, SplitSpec, get_dataset
from .errors import PromptGenError
from .generate import (PromptBuilder, apply_split, assign_splits, build_record,
                       generate_annotations, pair_images_masks, read_split_file,
                       write_annotations)
from .masks import MaskDescription, describe_mask, label_components
from .parse import (RoundTrip, attribute_distribution, load_annotations, parse_prompts,
                    round_trip)
from .swaps import AttributeSwap, swap_attribute
from .synthetic import write_synthetic_dataset
from .templates import Family

__all__ = [
    "DATASETS", "DatasetSpec", "SplitSpec", "get_dataset", "PromptGenError", "PromptBuilder",
    "apply_split", "assign_splits", "build_record", "generate_annotations",
    "pair_images_masks", "read_split_file", "write_annotations", "MaskDescription",
    "describe_mask", "label_components", "RoundTrip", "attribute_distribution",
    "load_annotations", "parse_prompts", "round_trip", "AttributeSwap", "swap_attribute",
    "write_synthetic_dataset", "Family"]
