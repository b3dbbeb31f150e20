"""Lesson 01's exercises: CLIP's zero-shot logits and prompt ensembling.

Solutions use only the names a lesson has imported (``torch``, ``np``, ``fm``) and their arguments."""
import torch
import torch.nn.functional as F

from .. import heads
from . import Case, Exercise, register, unit as _unit


def zero_shot_logits(f, W):
    """Logits of images ``f`` [N, D] (normalised) against class rows ``W`` [C, D]: the slide's 100 · f Wᵀ."""
    return 100 * f @ W.T


def _logit_cases():
    return [Case((_unit(6, 16, seed=0), _unit(4, 16, seed=1)), "6 random images x 4 classes"),
            Case((_unit(1, 16, seed=2), _unit(4, 16, seed=3)), "a single image"),
            Case((_unit(5, 16, seed=4), _unit(1, 16, seed=5)), "a single class")]


register(Exercise(
    "zero_shot_logits", "01_clip_zero_shot", reference=heads.logits, solution=zero_shot_logits, cases=_logit_cases,
    mistakes=((lambda f, W: f @ W.T, "cosine similarities lie in [-1, 1]; CLIP multiplies them by its logit "
                                     "scale (100) before the softmax"),
              (lambda f, W: 100 * W @ f.T, "one row per image and one column per class: [N, C], not [C, N]"))))


def prompt_ensemble(H):
    """Zero-shot classifier W [C, D] from per-template class embeddings ``H`` [T, C, D] (each row normalised):
    average over the templates, then normalise each class row again."""
    return torch.nn.functional.normalize(H.mean(0), dim=-1)


def _ensemble_cases():
    return [Case((_unit(7, 5, 16, seed=10),), "7 templates x 5 classes"),
            Case((_unit(1, 5, 16, seed=11),), "a single template (the ensemble is that template's head)"),
            Case((_unit(80, 3, 16, seed=12),), "80 templates (OpenAI's ImageNet set)")]


register(Exercise(
    "prompt_ensemble", "01_clip_zero_shot", reference=lambda H: heads.ensemble(H, range(len(H))),
    solution=prompt_ensemble, cases=_ensemble_cases,
    mistakes=((lambda H: H.mean(0), "the mean of unit vectors is shorter than 1: normalise each class row again"),
              (lambda H: F.normalize(H.mean(0), dim=0), "normalise each class's row (the last dimension), "
                                                       "not each feature across classes"),
              (lambda H: F.normalize(H.mean(1), dim=-1), "average over templates (dimension 0), not classes"))))
