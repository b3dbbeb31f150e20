"""Heads: pure functions of cached feature tensors (zero-shot text classifier, linear probe).

Names follow the lecture: ``f`` image features (L2-normalised, ``[N, D]``), ``W`` the text classifier
(``[C, D]``, one normalised class embedding per row), ``logits = 100 * f @ W.T``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open_clip
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.exceptions import ConvergenceWarning
import warnings

LOGIT_SCALE = 100.0  # CLIP's learned temperature saturates at 100; the papers use it as a constant
PROBE_C_GRID = tuple(np.logspace(-2, 3, 11))


def zero_shot_head(backbone, classnames, templates) -> torch.Tensor:
    """``W`` ``[C, D]``: per class, the normalised mean of the normalised embeddings of its prompts.

    Built with ``open_clip.build_zero_shot_classifier`` (the lecture's ``zeroshot_classifier``).
    """
    W = open_clip.build_zero_shot_classifier(backbone.model, backbone.tokenizer, list(classnames),
                                             list(templates), num_classes_per_batch=None,
                                             device=backbone.device)
    return W.T.float().cpu()


def per_template_heads(backbone, classnames, templates) -> torch.Tensor:
    """``[T, C, D]``: one classifier per template.  ``normalize(sum over a subset)`` is the ensemble
    of that subset, so template searches and the template picker never call the model again."""
    return torch.stack([zero_shot_head(backbone, classnames, [t]) for t in templates])


def ensemble(heads: torch.Tensor, subset) -> torch.Tensor:
    """The zero-shot classifier of the templates ``subset`` from per-template ``heads``."""
    return torch.nn.functional.normalize(heads[list(subset)].sum(0), dim=-1)


def logits(f: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return LOGIT_SCALE * f @ W.T


def accuracy(logits_or_pred: torch.Tensor, labels) -> float:
    pred = logits_or_pred.argmax(-1) if logits_or_pred.ndim == 2 else logits_or_pred
    return float((torch.as_tensor(pred) == torch.as_tensor(labels)).float().mean())


def forward_select_templates(heads: torch.Tensor, f_val, y_val, max_templates: int | None = None):
    """Sequential forward selection of templates on validation (CLIP's prompt-engineering notebook).

    Greedily adds the template that most raises validation accuracy; stops when none raises it.
    Returns ``(selected indices, validation accuracy after each addition)``.
    """
    chosen, curve, best = [], [], -1.0
    remaining = list(range(len(heads)))
    while remaining and (max_templates is None or len(chosen) < max_templates):
        scores = [accuracy(logits(f_val, ensemble(heads, chosen + [t])), y_val) for t in remaining]
        i = int(np.argmax(scores))
        if scores[i] <= best:
            break
        best = scores[i]
        chosen.append(remaining.pop(i))
        curve.append(best)
    return chosen, curve


@dataclass
class LinearProbe:
    """Logistic regression (L-BFGS) on normalised features; C chosen on validation."""
    clf: LogisticRegression
    C: float
    val_accuracy: dict  # C -> validation accuracy

    def logits(self, f) -> torch.Tensor:
        return torch.as_tensor(self.clf.decision_function(np.asarray(f)), dtype=torch.float32)

    def predict(self, f) -> torch.Tensor:
        return torch.as_tensor(self.clf.predict(np.asarray(f)))


def linear_probe(f_train, y_train, f_val, y_val, Cs=PROBE_C_GRID, max_iter: int = 1000) -> LinearProbe:
    """Fit one probe per C on ``train``, keep the C with the best ``val`` accuracy (ties: smaller C).

    The test split is never an argument, so it cannot influence the choice.
    """
    Xtr, ytr, Xva, yva = map(np.asarray, (f_train, y_train, f_val, y_val))
    best, scores = None, {}
    for C in Cs:
        clf = LogisticRegression(C=C, max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(Xtr, ytr)
        scores[float(C)] = float((clf.predict(Xva) == yva).mean())
        if best is None or scores[float(C)] > scores[best[0]]:
            best = (float(C), clf)
    return LinearProbe(best[1], best[0], scores)


def accuracy_by_domain(logits_fn, S, domains, split: str = "test") -> dict:
    """``{domain: accuracy}`` of ``logits_fn(f)`` on ``S[split, domain]``, plus ``ood`` (shift mean)."""
    acc = {d: accuracy(logits_fn(S[split, d][0]), S[split, d][1]) for d in domains}
    shifts = [d for d in domains if d != "photo"]
    if shifts:
        acc["ood"] = float(np.mean([acc[d] for d in shifts]))
    return acc


def probe_curve(S, shots, seeds: int, domains=("photo",), train_domain: str = "photo") -> dict:
    """k-shot linear probes: ``{k: {domain or "ood": [test accuracy per seed]}}``.

    Each probe is trained on ``k`` examples per class of ``train_domain``'s train split (seeded draw)
    and its C is chosen on that domain's validation split.
    """
    from .data import few_shot

    f_tr, y_tr = S["train", train_domain]
    f_va, y_va = S["val", train_domain]
    out = {}
    for k in shots:
        runs = []
        for seed in range(seeds):
            idx = torch.as_tensor(few_shot(y_tr.numpy(), k, seed))
            runs.append(accuracy_by_domain(linear_probe(f_tr[idx], y_tr[idx], f_va, y_va).logits, S, domains))
        out[k] = {d: [r[d] for r in runs] for d in runs[0]}
    return out
