"""Errors of prompt generation; every message names the offending file or key."""


class PromptGenError(ValueError):
    """Bad input to prompt generation (mask, image, metadata, split or annotation file)."""
