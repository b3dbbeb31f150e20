"""The embedded CLIPs' architectures: open_clip configs (``configs/*.json``, registered with
``open_clip.add_model_config`` on import) and the BatchNorm conv tower, registered as timm models.

open_clip builds timm towers from a config's ``timm_model_name``, so registering the tower with timm
keeps the tiny CLIP entirely inside open_clip's machinery (config JSON, ``create_model_and_transforms``,
``pretrained=<file>``).  At 32 px a plain stride-2 conv stack learns shape far faster on CPU than
open_clip's ViT or ModifiedResNet towers (FIELD_NOTES.md), and it has the BatchNorm layers that the
synthetic-data lesson freezes.
"""
import open_clip
import torch.nn as nn
from timm.models import register_model

from . import CONFIG_DIR

open_clip.add_model_config(CONFIG_DIR)


class ConvNet(nn.Module):
    def __init__(self, widths=(32, 64, 128), num_classes=0, global_pool="avg", in_chans=3, **_):
        super().__init__()
        layers, c = [], in_chans
        for i, w in enumerate(widths):  # each stage halves the resolution: 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w),
                       nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.num_features = c
        self.default_cfg = self.pretrained_cfg = {"pool_size": None}
        self.reset_classifier(num_classes, global_pool)

    def reset_classifier(self, num_classes=0, global_pool="avg"):
        self.global_pool = global_pool
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x):
        x = self.features(x)
        if self.global_pool:
            x = x.mean((2, 3))
        return self.fc(x)


@register_model
def fmcls_convnet_tiny(pretrained=False, **kwargs):
    return ConvNet((32, 64, 128), **kwargs)


@register_model
def fmcls_convnet_micro(pretrained=False, **kwargs):
    return ConvNet((8, 16, 32), **kwargs)
