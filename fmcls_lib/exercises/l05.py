"""Lesson 05's exercises: WiSE-FT's weight-space ensemble θ_α (the slide "Implementation") and the output-space
ensemble it equals for LC fine-tuning.

Solutions use only the names a lesson has imported (``torch``, ``np``, ``fm``) and their arguments."""
import torch

from .. import weights
from . import Case, Exercise, register, gen as _gen


def _state_dict(seed, shapes=((4, 3), (4,), (2, 2, 3))):
    g = _gen(seed)
    return {f"layer{i}.weight": torch.randn(*s, generator=g) for i, s in enumerate(shapes)}


def wise_interpolation(theta_0, theta_1, alpha):
    """θ_α = (1 − α) θ₀ + α θ₁, key by key, for two state dicts (name -> tensor) of one architecture."""
    return {key: (1 - alpha) * theta_0[key] + alpha * theta_1[key] for key in theta_0.keys()}


def _wise_cases():
    return [Case((_state_dict(0), _state_dict(1), 0.3), "two random state dicts at alpha = 0.3"),
            Case((_state_dict(2), _state_dict(3), 0.0), "alpha = 0 (must give the zero-shot theta_0)"),
            Case((_state_dict(4), _state_dict(5), 1.0), "alpha = 1 (must give the fine-tuned theta_1)"),
            Case((_state_dict(6, ((1,),)), _state_dict(7, ((1,),)), 0.5), "a one-entry state dict at alpha = 0.5")]


register(Exercise(
    "wise_interpolation", "05_wise_ft", reference=weights.wise, solution=wise_interpolation, cases=_wise_cases,
    mistakes=((lambda t0, t1, a: {k: a * t0[k] + (1 - a) * t1[k] for k in t0},
               "alpha = 0 is the zero-shot model theta_0 and alpha = 1 the fine-tuned theta_1: check which state "
               "dict each coefficient multiplies"),
              (lambda t0, t1, a: {k: t0[k] + a * t1[k] for k in t0},
               "the two coefficients must sum to 1 (a weighted average, not a sum)"),
              (lambda t0, t1, a: {k: (t0[k] + t1[k]) / 2 for k in t0},
               "the mix depends on alpha; the plain average is only alpha = 0.5"))))


def output_ensemble(logits_0, logits_1, alpha):
    """(1 − α) f(x, θ₀) + α f(x, θ₁): the two models' logits [N, C] mixed with weight α."""
    return (1 - alpha) * logits_0 + alpha * logits_1


def _logits(n, c, seed):
    return 5 * torch.randn(n, c, generator=_gen(seed))


def _ensemble_cases():
    return [Case((_logits(8, 5, 10), _logits(8, 5, 11), 0.3), "8 images x 5 classes at alpha = 0.3"),
            Case((_logits(1, 5, 12), _logits(1, 5, 13), 0.5), "a single image at alpha = 0.5"),
            Case((_logits(6, 2, 14), _logits(6, 2, 15), 1.0), "alpha = 1 (the fine-tuned model's logits)")]


register(Exercise(
    "output_ensemble", "05_wise_ft", solution=output_ensemble, cases=_ensemble_cases,
    reference=lambda z0, z1, alpha: weights.output_ensemble([z0, z1], [1 - alpha, alpha]),
    mistakes=((lambda z0, z1, a: a * z0 + (1 - a) * z1,
               "alpha = 0 is the zero-shot model f(x, theta_0): check which logits each coefficient multiplies"),
              (lambda z0, z1, a: (1 - a) * z0.softmax(1) + a * z1.softmax(1),
               "the slide mixes the outputs f (logits, before the softmax), not probabilities"),
              (lambda z0, z1, a: z0 + a * z1, "the two coefficients must sum to 1"))))
