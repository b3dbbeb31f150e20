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


# "Prompt with GPT-3" (CaFo, CuPL): rich class descriptions averaged into the text classifier.  These are
# HAND-WRITTEN stand-ins for a language model's answers to "What does a [CLASS] look like?", written as
# data for the world's classes; no model produced them.  Like an LLM would, they use synonyms, which
# is what lets them repair classes whose names the tiny CLIP never saw in its captions.
DESCRIPTIONS = {
    "world/shapes": {
        "circle": ("a round disc with no corners.", "a circle, a perfectly round filled shape.",
                   "a disc shaped like a full moon."),
        "ring": ("a donut shape with a hole in the middle.", "a ring, a circle with its centre cut out.",
                 "a round donut."),
        "square": ("a square with four equal sides and right angles.", "a square, a box shape.",
                   "a shape with four corners, like a tile."),
        "diamond": ("a rhombus standing on one corner.", "a diamond, a lozenge shape taller than wide.",
                    "a rhombus, a square tilted onto its point."),
        "triangle": ("a triangle with three corners.", "a three-sided shape pointing up.",
                     "a triangle, a shape with three straight sides."),
        "pentagon": ("a pentagon with five sides.", "a five-sided polygon.", "a pentagon, like a house shape."),
        "hexagon": ("a six-sided shape, like a honeycomb cell.", "a hexagon, a six-sided polygon.",
                    "a six-sided polygon with flat top and bottom."),
        "star": ("a star with five points.", "a five-pointed star.", "a star shape with sharp points."),
        "cross": ("a cross, like a plus sign.", "a plus sign with four equal arms.",
                  "a cross shape with arms of equal length."),
        "heart": ("a heart shape with two rounded lobes on top.", "a heart, the symbol of love.",
                  "a heart with a point at the bottom."),
        "arrow": ("an arrow pointing to one side.", "an arrow with a triangular head and a shaft.",
                  "an arrow shape."),
        "crescent": ("a crescent, like a half moon.", "a moon shape, a thin curved sliver.",
                     "a crescent moon, a circle with a bite taken out."),
    },
    "world/colors": {c: (f"something {c}.", f"an object whose colour is {c}.", f"a {c} thing.")
                     for c in ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown",
                               "white")},
}


def descriptions(task: str) -> dict:
    """Hand-written class descriptions of a world task (stand-ins for an LLM's, see ``DESCRIPTIONS``)."""
    if task not in DESCRIPTIONS:
        raise UnknownNameError("task with descriptions", task, DESCRIPTIONS)
    return DESCRIPTIONS[task]


def load_descriptions(path) -> dict:
    """Real path: a CuPL / CaFo-style JSON file ``{classname: [description, ...]}``."""
    import json
    from pathlib import Path
    d = json.loads(Path(path).read_text())
    if not isinstance(d, dict) or not all(isinstance(v, list) and v for v in d.values()):
        raise ValueError(f"{path}: expected a JSON object {{classname: [description, ...]}}")
    return {k: tuple(v) for k, v in d.items()}
