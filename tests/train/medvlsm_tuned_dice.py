"""medvlsm's loss for the CNN baselines (``src.losses.TunedDiceLoss``) as PyTorch reference code.

MONAI is not a dependency of this project; :class:`MonaiDiceLoss` is MONAI 1.1.0's ``DiceLoss``
forward for its default arguments, copied. Both classes were checked once against the original
(``monai==1.1.0`` + the medvlsm file) to give bit-identical values and gradients.
"""

from __future__ import annotations

import torch


class MonaiDiceLoss(torch.nn.Module):
    """MONAI 1.1.0 ``monai.losses.DiceLoss`` with its default arguments (medvlsm pins
    monai==1.1.0): the ``forward`` below is MONAI's, verbatim, minus the branches its defaults
    skip (sigmoid/softmax/other_act/to_onehot_y False, include_background True,
    squared_pred/jaccard/batch False, reduction "mean", smooth_nr = smooth_dr = 1e-5)."""

    smooth_nr = 0.00001
    smooth_dr = 0.00001

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape != input.shape:
            raise AssertionError(f"ground truth has different shape ({target.shape}) from input ({input.shape})")

        # reducing only spatial dimensions (not batch nor channels)
        reduce_axis: list[int] = torch.arange(2, len(input.shape)).tolist()

        intersection = torch.sum(target * input, dim=reduce_axis)

        ground_o = torch.sum(target, dim=reduce_axis)
        pred_o = torch.sum(input, dim=reduce_axis)

        denominator = ground_o + pred_o

        f: torch.Tensor = 1.0 - (2.0 * intersection + self.smooth_nr) / (denominator + self.smooth_dr)

        f = torch.mean(f)  # the batch and channel average
        return f


class TunedDiceLoss(MonaiDiceLoss):
    """naamiinepal/medvlsm ``src/losses/tuned_dice_loss.py`` at commit
    2ebbb489f576c7572c281085d3fe6d00a1dc06fc (unchanged up to the released HEAD dc36a3a):
    ``forward`` verbatim. medvlsm's ``BaseModule.step`` calls it as
    ``loss_fn(sigmoid(logits), masks[:, None])``."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:

        losses = []
        for target_msk, input_msk in zip(target, input):
            usable_planes_idx = []
            for plane_idx, plane in enumerate(target_msk):
                if 1 in plane.unique():
                    # Only compute loss if there is a mask in this
                    usable_planes_idx.append(plane_idx)
            target_msk = target_msk[usable_planes_idx]
            input_msk = input_msk[usable_planes_idx]

            loss = super().forward(input_msk.unsqueeze(0), target_msk.unsqueeze(0))
            losses.append(loss)

        return sum(losses) / len(losses)
