"""Evaluation: paper metrics (Dice, IoU, HD95 as MONAI computes them) and test-split scoring at
the original resolution."""
