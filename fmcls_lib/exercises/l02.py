"""Lesson 02's exercises: Tip-Adapter's cache logits and CLIP-Adapter's residual blend.

Solutions use only the names a lesson has imported (``torch``, ``np``, ``fm``) and their arguments."""
import torch
import torch.nn.functional as F

from .. import heads, tip_adapter
from . import Case, Exercise, register, unit as _unit


def _cache(n_per_class, C, D, seed):
    """Keys ``[N, D]`` (normalised) and one-hot values ``[N, C]`` of an ``n_per_class``-shot cache."""
    y = torch.arange(C).repeat(n_per_class)
    return _unit(len(y), D, seed=seed), F.one_hot(y, C).float()


def tip_adapter_logits(f, F_train, L_train, W, alpha, beta):
    """Tip-Adapter's logits for images ``f`` [N, D]: zero-shot CLIP's 100 · f Wᵀ plus alpha times the cache's
    vote, exp(-beta (1 - f F_trainᵀ)) L_train, with keys ``F_train`` [M, D] and one-hot values ``L_train`` [M, C]."""
    A = torch.exp(-beta * (1 - f @ F_train.T))
    return 100 * f @ W.T + alpha * A @ L_train


def _tip_reference(f, F_train, L_train, W, alpha, beta):
    return tip_adapter.logits(f, tip_adapter.Cache(F_train, L_train), W, alpha=alpha, beta=beta)


def _tip_cases():
    F4, L4 = _cache(4, 5, 16, seed=21)
    F1, L1 = _cache(1, 3, 16, seed=23)
    return [Case((_unit(6, 16, seed=20), F4, L4, _unit(5, 16, seed=22), 1.0, 5.5),
                 "6 images, a 4-shot cache of 5 classes"),
            Case((_unit(1, 16, seed=24), F1, L1, _unit(3, 16, seed=25), 2.0, 1.0), "a single image, a 1-shot cache"),
            Case((_unit(4, 16, seed=26), F4, L4, _unit(5, 16, seed=27), 0.0, 5.5),
                 "alpha = 0 (the cache adds nothing: zero-shot CLIP)")]


register(Exercise(
    "tip_adapter_logits", "02_tip_adapter", reference=_tip_reference, solution=tip_adapter_logits,
    cases=_tip_cases,
    mistakes=((lambda f, F_train, L_train, W, alpha, beta: 100 * f @ W.T
               + alpha * torch.exp(-beta * (f @ F_train.T)) @ L_train,
               "the affinity enters as exp(-beta (1 - a)): a key equal to the image (a = 1) must weigh exp(0) = 1"),
              (lambda f, F_train, L_train, W, alpha, beta: 100 * (
                  f @ W.T + alpha * torch.exp(-beta * (1 - f @ F_train.T)) @ L_train),
               "only the zero-shot term f Wᵀ carries CLIP's logit scale 100; the cache term is added unscaled"),
              (lambda f, F_train, L_train, W, alpha, beta: f @ W.T
               + alpha * torch.exp(-beta * (1 - f @ F_train.T)) @ L_train,
               "the zero-shot term is CLIP's logits: cosine similarities times the logit scale 100"),
              (lambda f, F_train, L_train, W, alpha, beta: 100 * f @ W.T
               + torch.exp(-beta * (1 - f @ F_train.T)) @ L_train,
               "the cache's vote is weighed by the residual ratio alpha"),
              (lambda f, F_train, L_train, W, alpha, beta: 100 * f @ W.T
               + alpha * torch.exp(-beta * (1 - f @ F_train.T)).sum(1, keepdim=True),
               "each key votes for its own class: multiply the affinities by the one-hot values L_train"))))


def clip_adapter_logits(f, W, A_v, A_t, alpha, beta):
    """CLIP-Adapter's logits for images ``f`` [N, D] against class rows ``W`` [C, D]: blend the adapted and the
    original features (f* with the visual adapter ``A_v`` and ratio ``alpha``, W* with the text adapter ``A_t``
    and ratio ``beta``), then CLIP's 100 · f* W*ᵀ with every row normalised."""
    f_star = alpha * A_v(f) + (1 - alpha) * f
    W_star = beta * A_t(W) + (1 - beta) * W
    f_star = f_star / f_star.norm(dim=-1, keepdim=True)
    W_star = W_star / W_star.norm(dim=-1, keepdim=True)
    return 100 * f_star @ W_star.T


def _adapter_reference(f, W, A_v, A_t, alpha, beta):
    return heads.clip_adapter_logits(f, W, A_v, alpha, A_t, beta)


def _adapters(D, seed):
    """A visual and a text adapter of the library's shape, with fixed weights (nothing trains here)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        adapter = heads.ClipAdapter(D, torch.zeros(1, D), text_ratio=0.5).requires_grad_(False)
    return adapter.mlp, adapter.text_mlp


def _adapter_cases():
    A_v, A_t = _adapters(16, seed=30)
    return [Case((_unit(6, 16, seed=31), _unit(4, 16, seed=32), A_v, A_t, 0.2, 0.3),
                 "6 images x 4 classes, alpha = 0.2, beta = 0.3"),
            Case((_unit(1, 16, seed=33), _unit(4, 16, seed=34), A_v, A_t, 0.6, 0.0),
                 "beta = 0 (the visual adapter alone, the lesson's setting)"),
            Case((_unit(5, 16, seed=35), _unit(3, 16, seed=36), A_v, A_t, 0.0, 0.0),
                 "alpha = beta = 0 (zero-shot CLIP)")]


def _no_norm_f(f, W, A_v, A_t, alpha, beta):
    W_star = F.normalize(beta * A_t(W) + (1 - beta) * W, dim=-1)
    return 100 * (alpha * A_v(f) + (1 - alpha) * f) @ W_star.T


def _no_norm_W(f, W, A_v, A_t, alpha, beta):
    return 100 * F.normalize(alpha * A_v(f) + (1 - alpha) * f, dim=-1) @ (beta * A_t(W) + (1 - beta) * W).T


def _swapped(f, W, A_v, A_t, alpha, beta):
    f_star = F.normalize((1 - alpha) * A_v(f) + alpha * f, dim=-1)
    return 100 * f_star @ F.normalize((1 - beta) * A_t(W) + beta * W, dim=-1).T


register(Exercise(
    "clip_adapter_logits", "02_tip_adapter", reference=_adapter_reference, solution=clip_adapter_logits,
    cases=_adapter_cases,
    mistakes=((_no_norm_f, "CLIP compares unit vectors: normalise each image's blended feature f* before the product"),
              (_no_norm_W, "the blended class rows W* are no longer unit vectors: normalise each row before the "
                           "product"),
              (_swapped, "the ratio weighs the adapter's output: alpha · A_v(f) + (1 - alpha) · f (and likewise beta "
                         "for A_t(W))"),
              (lambda f, W, A_v, A_t, alpha, beta: clip_adapter_logits(f, W, A_v, A_t, alpha, beta) / 100,
               "cosine similarities lie in [-1, 1]; CLIP multiplies them by its logit scale (100)"))))
