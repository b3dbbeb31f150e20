"""The embedded self-supervised encoder's architecture: a fixed Sobel stem in front of the course's conv tower
(timm ``fmcls_convnet_*``, :mod:`.clip`), and its input normalisation."""
from __future__ import annotations

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import clip  # noqa: F401  (registers the conv towers with timm)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class SobelStem(nn.Module):
    """Fixed, not trained: the two Sobel derivatives of each colour channel, scaled to unit deviation per
    image.

    DeepCluster (Caron et al. 2018) put a Sobel filter in front of its network so that colour could not be
    what the self-supervised clusters form around.  Here colour is not the only such cue: crops of one image
    keep the *relation* between object and background colour under any global colour jitter, and views are
    matched by it before shape (FIELD_NOTES.md).  Per-channel edges keep every object visible (a red shape
    on a grey ground of equal brightness vanishes in a grayscale Sobel) and drop flat colour."""

    def __init__(self):
        super().__init__()
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
        self.register_buffer("kernel", torch.stack([kx, kx.T])[:, None].repeat(3, 1, 1, 1))

    def forward(self, x):
        e = F.conv2d(x, self.kernel, padding=1, groups=3)
        return e / (e.flatten(1).std(1)[:, None, None, None] + 1e-6)


def encoder(tower: str, sobel: bool = True) -> nn.Module:
    """The timm ``tower`` (no classifier), behind a :class:`SobelStem` if ``sobel``."""
    if sobel:
        return nn.Sequential(SobelStem(), timm.create_model(tower, num_classes=0, in_chans=6))
    return timm.create_model(tower, num_classes=0)
