"""Prompt templates as data.

``OPENAI_80`` and ``OPENAI_7`` are the 80 ImageNet templates of CLIP and the 7 that CLIP's
"Prompt Engineering for ImageNet" notebook selected (Radford et al. 2021; the list in the lecture's
"Prompt Engineering" slide).  We take them from open_clip's copy of OpenAI's metadata
(``open_clip.zero_shot_metadata``) rather than retyping them.
"""
from __future__ import annotations

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from .errors import UnknownNameError

OPENAI_80 = tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
OPENAI_7 = tuple(t("{}") for t in SIMPLE_IMAGENET_TEMPLATES)
BARE = ("{}",)
PHOTO = ("a photo of a {}.",)
DOMAIN = {"photo": "a photo of a {}.", "sketch": "a sketch of a {}.", "painting": "a painting of a {}.",
          "pixel": "a pixel-art image of a {}."}
WORLD = tuple(DOMAIN.values()) + ("a {}.", "a picture of a {}.", "a pencil drawing of a {}.",
                                  "an oil painting of a {}.", "pixel art of a {}.")

TEMPLATE_SETS = {"bare": BARE, "photo": PHOTO, "openai_7": OPENAI_7, "openai_80": OPENAI_80,
                 "world": WORLD}


def templates(name: str) -> tuple[str, ...]:
    if name not in TEMPLATE_SETS:
        raise UnknownNameError("template set", name, TEMPLATE_SETS)
    return TEMPLATE_SETS[name]
