"""Lesson 04's exercises: a cache model's logits (CLIP's or DINO's cache) and CaFo's adaptive ensemble weights.

Solutions use only the names a lesson has imported (``torch``, ``np``, ``fm``) and their arguments."""
import torch
import torch.nn.functional as F

from .. import cafo
from . import Case, Exercise, register, labels as _labels, randn as _randn, unit as _unit


def _onehot(n, C, seed):
    return F.one_hot(_labels(n, C, seed), C).float()


def cache_logits(f, F_train, L_onehot, beta):
    """A cache's logits φ(f F_trainᵀ) L_onehot with φ(x) = exp(−β (1 − x)): test features ``f`` [N, D] and cache keys
    ``F_train`` [M, D] (both normalised), one-hot values ``L_onehot`` [M, C]."""
    return torch.exp(-beta * (1 - f @ F_train.T)) @ L_onehot


def _cache_cases():
    return [Case((_unit(6, 16, seed=0), _unit(20, 16, seed=1), _onehot(20, 4, 2), 5.5), "6 images, 20 keys, 4 classes"),
            Case((_unit(3, 16, seed=3), _unit(5, 16, seed=4), _onehot(5, 5, 5), 1.0), "β = 1"),
            Case((_unit(1, 8, seed=6), _unit(4, 8, seed=7), _onehot(4, 2, 8), 12.0), "a single image, β = 12")]


def _no_one_minus(f, F_train, L_onehot, beta):
    return torch.exp(-beta * (f @ F_train.T)) @ L_onehot


def _sign_flipped(f, F_train, L_onehot, beta):
    return torch.exp(beta * (1 - f @ F_train.T)) @ L_onehot


def _no_exponential(f, F_train, L_onehot, beta):
    return (f @ F_train.T) @ L_onehot


register(Exercise(
    "cache_logits", "04_cafo", reference=cafo.cache_logits, solution=cache_logits, cases=_cache_cases,
    mistakes=((_no_one_minus, "φ acts on the distance 1 - f F_trainᵀ: a key identical to f has affinity exp(0) = 1"),
              (_sign_flipped, "a closer key must weigh more: the exponent is -β times the distance"),
              (_no_exponential, "the affinities go through φ(x) = exp(-β(1 - x)) before they pick the labels"))))


def fusion_weights(p_zs, p_clip, p_dino):
    """CaFo's adaptive weights [N, 2] of the CLIP and DINO caches, as the official code computes them: z-score every
    logit row over the classes, w_i = p̃_i · p̃_ZS, then a softmax over the two caches."""
    def z(p):
        return (p - p.mean(1, keepdim=True)) / p.std(1, keepdim=True)
    w = torch.stack([(z(p_clip) * z(p_zs)).sum(1), (z(p_dino) * z(p_zs)).sum(1)], dim=1)
    return torch.softmax(w, dim=1)


def _weights_reference(p_zs, p_clip, p_dino):
    return cafo.fusion_weights(p_zs, [p_clip, p_dino])


def _weights_cases():
    return [Case((_randn(6, 5, seed=10, scale=20), _randn(6, 5, seed=11, scale=2), _randn(6, 5, seed=12, scale=2)),
                 "6 images x 5 classes"),
            Case((_randn(4, 10, seed=13, scale=20), _randn(4, 10, seed=14), _randn(4, 10, seed=15, scale=5)),
                 "caches of different sizes (10 classes)"),
            Case((_randn(1, 3, seed=16, scale=20), _randn(1, 3, seed=17), _randn(1, 3, seed=18)), "a single image")]


def _raw_logits(p_zs, p_clip, p_dino):
    return cafo.fusion_weights(p_zs, [p_clip, p_dino], normalize=False)


def _over_caches_wrong_dim(p_zs, p_clip, p_dino):
    def z(p):
        return (p - p.mean(1, keepdim=True)) / p.std(1, keepdim=True)
    return torch.stack([(z(p_clip) * z(p_zs)).sum(1), (z(p_dino) * z(p_zs)).sum(1)], dim=1).softmax(0)


def _population_std(p_zs, p_clip, p_dino):
    def z(p):
        return (p - p.mean(1, keepdim=True)) / p.std(1, keepdim=True, unbiased=False)
    return torch.stack([(z(p_clip) * z(p_zs)).sum(1), (z(p_dino) * z(p_zs)).sum(1)], dim=1).softmax(1)


def _zscore_over_images(p_zs, p_clip, p_dino):
    def z(p):
        return (p - p.mean(0, keepdim=True)) / p.std(0, keepdim=True)
    return torch.stack([(z(p_clip) * z(p_zs)).sum(1), (z(p_dino) * z(p_zs)).sum(1)], dim=1).softmax(1)


register(Exercise(
    "fusion_weights", "04_cafo", reference=_weights_reference, solution=fusion_weights, cases=_weights_cases,
    mistakes=((_raw_logits, "that is the slide's formula on the raw logits: the official code z-scores every logit "
                            "row over the classes first"),
              (_over_caches_wrong_dim, "the softmax runs over the two caches of one image, so each row sums to 1"),
              (_population_std, "the z-score divides by torch.std's default (the unbiased, n - 1 estimate)"),
              (_zscore_over_images, "z-score each image's row over the classes (dimension 1), not each class "
                                    "over the images"))))
