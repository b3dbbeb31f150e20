"""Lesson 03's exercises: the soft-target cross-entropy (SCE) and the CLIP filter (CF) of He et al. (ICLR 2023).

Solutions use only the names a lesson has imported (``torch``, ``np``, ``fm``) and their arguments."""
import torch
import torch.nn.functional as F

from .. import synthetic
from . import Case, Exercise, register, labels as _labels, randn as _randn


def sce_loss(p, z_zs, y, sl, T):
    """``sl · SCE + (1 − sl) · CE`` of a head's logits ``p`` [N, C]: SCE is the cross-entropy against the soft
    labels softmax(``z_zs`` / T) of the zero-shot logits ``z_zs`` [N, C], CE the one against the labels ``y`` [N]."""
    log_p = torch.log_softmax(p, dim=1)
    SCE = -(torch.softmax(z_zs / T, dim=1) * log_p).sum(1).mean()
    CE = -log_p[torch.arange(len(y)), y].mean()
    return sl * SCE + (1 - sl) * CE


def _sce_reference(p, z_zs, y, sl, T):
    return synthetic.soft_target_loss(p, z_zs, y, sl=sl, T=T)


def _sce_cases():
    return [Case((_randn(8, 5, seed=0, scale=3), _randn(8, 5, seed=1, scale=10), _labels(8, 5, 2), 0.5, 2.0),
                 "8 images x 5 classes, sl = 0.5, T = 2 (the official defaults)"),
            Case((_randn(6, 4, seed=3, scale=3), _randn(6, 4, seed=4, scale=10), _labels(6, 4, 5), 1.0, 2.0),
                 "sl = 1 (SCE only)"),
            Case((_randn(6, 4, seed=6, scale=3), _randn(6, 4, seed=7, scale=10), _labels(6, 4, 8), 0.0, 2.0),
                 "sl = 0 (plain cross-entropy)"),
            Case((_randn(1, 3, seed=9, scale=3), _randn(1, 3, seed=10, scale=10), _labels(1, 3, 11), 0.3, 1.0),
                 "a single image, sl = 0.3, T = 1")]


def _no_temperature(p, z_zs, y, sl, T):
    return _sce_reference(p, z_zs, y, sl, 1.0)


def _targets_and_predictions_swapped(p, z_zs, y, sl, T):
    sce = -(torch.softmax(p, dim=1) * torch.log_softmax(z_zs / T, dim=1)).sum(1).mean()
    return sl * sce + (1 - sl) * F.cross_entropy(p, y)


def _weights_swapped(p, z_zs, y, sl, T):
    return _sce_reference(p, z_zs, y, 1 - sl, T)


def _summed_over_images(p, z_zs, y, sl, T):
    return len(y) * _sce_reference(p, z_zs, y, sl, T)


register(Exercise(
    "sce_loss", "03_synthetic_data", reference=_sce_reference, solution=sce_loss, cases=_sce_cases,
    mistakes=((_weights_swapped, "sl weighs the soft-target term and 1 - sl the hard-label cross-entropy"),
              (_no_temperature, "the soft labels are the softmax of the zero-shot logits divided by the temperature T"),
              (_targets_and_predictions_swapped, "the targets are the zero-shot classifier's soft labels; the "
                                                 "log-probabilities are the head's (p)"),
              (_summed_over_images, "average the loss over the images of the batch, do not sum it"))))


def clip_filter_mask(z_zs, y):
    """CF without the fallback: keep a generated image (True) when the zero-shot probability of its prompt's
    class ``y`` [N], softmax over the classes of ``z_zs`` [N, C], is above 1 / C."""
    C = z_zs.shape[1]
    p_y = torch.softmax(z_zs, dim=1)[torch.arange(len(y)), y]
    return p_y > 1 / C


def _cf_reference(z_zs, y):
    return synthetic.clip_filter(z_zs, y)  # min_per_class = 0: the threshold alone


def _cf_cases():
    return [Case((_randn(40, 5, seed=20, scale=2), _labels(40, 5, 21)), "40 generated images x 5 classes"),
            Case((torch.zeros(6, 4), _labels(6, 4, 22)), "uniform zero-shot logits (every probability is exactly 1/C)"),
            Case((_randn(30, 10, seed=23, scale=3), _labels(30, 10, 24)), "30 images x 10 classes")]


def _top1(z_zs, y):
    return z_zs.argmax(1) == y


def _at_least(z_zs, y):
    return torch.softmax(z_zs, dim=1)[torch.arange(len(y)), y] >= 1 / z_zs.shape[1]


def _on_logits(z_zs, y):
    return z_zs[torch.arange(len(y)), y] > 1 / z_zs.shape[1]


def _softmax_over_images(z_zs, y):
    return torch.softmax(z_zs, dim=0)[torch.arange(len(y)), y] > 1 / z_zs.shape[1]


register(Exercise(
    "clip_filter_mask", "03_synthetic_data", reference=_cf_reference, solution=clip_filter_mask, cases=_cf_cases,
    mistakes=((_at_least, "an image exactly at chance level (probability 1/C) is not confident: the comparison is "
                          "strict"),
              (_top1, "CF thresholds the probability of the prompt's class; it does not ask whether that class "
                      "is CLIP's top-1 prediction"),
              (_on_logits, "turn the zero-shot logits into probabilities over the classes before comparing with 1/C"),
              (_softmax_over_images, "the softmax runs over the classes (dimension 1), not over the images"))))
