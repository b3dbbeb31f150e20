"""Heads: pure functions of cached feature tensors (zero-shot, linear probe, CLIP-Adapter, per-class accuracy).

Names follow the lecture: ``f`` image features (L2-normalised, ``[N, D]``), ``W`` the text classifier
(``[C, D]``, one normalised class embedding per row), ``logits = scale * f @ W.T`` (CLIP: 100).
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from .errors import UnknownNameError
from .training import Fit, fit


class single_threaded(contextlib.ContextDecorator):
    """Run torch with one intra-op thread inside (restored after); a context manager and a decorator.

    Heads are built from a few hundred prompts and train and search on small cached tensors, where a second
    OpenMP thread only adds synchronisation, and on a busy machine much more (measured on 2 shared cores:
    CLIP-Adapter's 200 epochs 40 s with two threads, 0.75 s with one; the 87 per-template classifiers of lesson
    01 19 s and 0.8 s).  One thread also makes every head's numbers independent of ``$FMCLS_THREADS``.
    """

    def __init__(self):
        self._outer = []  # a stack: one decorated function may run inside another

    def __enter__(self):
        self._outer.append(torch.get_num_threads())
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self._outer.pop())
        return False


LOGIT_SCALE = 100.0  # OpenAI CLIP's learned logit scale (saturated at its cap); the slides' "100"
PROBE_C_GRID = tuple(np.logspace(-2, 3, 11))


@single_threaded()
def zero_shot_head(backbone, classnames, templates) -> torch.Tensor:
    """``W`` ``[C, D]``: per class, the normalised mean of the normalised embeddings of its prompts.

    Built with ``open_clip.build_zero_shot_classifier`` (the lecture's ``zeroshot_classifier``).
    """
    W = open_clip.build_zero_shot_classifier(backbone.model, backbone.tokenizer, list(classnames),
                                             list(templates), num_classes_per_batch=None,
                                             device=backbone.device)
    return W.T.float().cpu()


@single_threaded()
def description_head(backbone, classnames, descriptions: dict, templates=("a photo of a {}.",)) -> torch.Tensor:
    """CuPL / CaFo classifier: per class, the normalised mean of the embeddings of its templated name and
    of its descriptions (``descriptions[class]``: sentences), normalised again."""
    rows = []
    for c in classnames:
        if c not in descriptions:
            raise UnknownNameError("class with descriptions", c, descriptions)
        texts = [t.format(c) for t in templates] + list(descriptions[c])
        rows.append(F.normalize(backbone.encode_text(texts).mean(0), dim=-1))
    return torch.stack(rows)


def per_template_heads(backbone, classnames, templates) -> torch.Tensor:
    """``[T, C, D]``: one classifier per template.  ``normalize(sum over a subset)`` is the ensemble
    of that subset, so template searches and the template picker never call the model again."""
    return torch.stack([zero_shot_head(backbone, classnames, [t]) for t in templates])


def ensemble(heads: torch.Tensor, subset) -> torch.Tensor:
    """The zero-shot classifier of the templates ``subset`` from per-template ``heads``."""
    return torch.nn.functional.normalize(heads[list(subset)].sum(0), dim=-1)


def logit_scale(backbone) -> float:
    """The backbone's learned logit scale: 100 for OpenAI's CLIPs, what pre-training reached for ours."""
    return float(backbone.model.logit_scale.detach().exp())


def logits(f: torch.Tensor, W: torch.Tensor, scale: float = LOGIT_SCALE) -> torch.Tensor:
    """Zero-shot logits ``scale * f @ W.T`` (CLIP: ``100 * image_features @ text_features.T``)."""
    return scale * f @ W.T


def accuracy(logits_or_pred: torch.Tensor, labels) -> float:
    pred = logits_or_pred.argmax(-1) if logits_or_pred.ndim == 2 else logits_or_pred
    return float((torch.as_tensor(pred) == torch.as_tensor(labels)).float().mean())


def per_class_accuracy(logits_or_pred: torch.Tensor, labels, classnames) -> dict:
    """``{class name: accuracy on the images of that class}`` (recall per class); a class without images gets
    NaN.  ``logits_or_pred``: ``[N, C]`` logits or ``[N]`` predicted labels."""
    pred = logits_or_pred.argmax(-1) if logits_or_pred.ndim == 2 else logits_or_pred
    pred, labels = torch.as_tensor(pred), torch.as_tensor(labels)
    return {c: accuracy(pred[labels == i], labels[labels == i]) for i, c in enumerate(classnames)}


@single_threaded()
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
        with threadpool_limits(1, user_api="blas"):
            return torch.as_tensor(self.clf.decision_function(np.asarray(f)), dtype=torch.float32)

    def predict(self, f) -> torch.Tensor:
        return torch.as_tensor(self.clf.predict(np.asarray(f)))


def linear_probe(f_train, y_train, f_val, y_val, Cs=PROBE_C_GRID, max_iter: int = 1000) -> LinearProbe:
    """Fit one probe per C on ``train``, keep the C with the best ``val`` accuracy (ties: smaller C).

    The test split is never an argument, so it cannot influence the choice.
    """
    Xtr, ytr, Xva, yva = map(np.asarray, (f_train, y_train, f_val, y_val))
    best, scores = None, {}
    # one BLAS thread: these problems are small, and a multi-threaded BLAS spinning on a busy machine made
    # the 11 L-BFGS fits on 768 images take 38 s instead of 0.9 s (measured on 2 shared cores)
    with threadpool_limits(1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for C in Cs:
            clf = LogisticRegression(C=C, max_iter=max_iter)
            clf.fit(Xtr, ytr)
            scores[float(C)] = float((clf.predict(Xva) == yva).mean())
            if best is None or scores[float(C)] > scores[best[0]]:
                best = (float(C), clf)
    return LinearProbe(best[1], best[0], scores)


def knn_predict(f_train, y_train, f_query, k: int = 10) -> torch.Tensor:
    """Cosine k-NN on L2-normalised features: each query's majority label among its ``k`` nearest training
    features (a tie goes to the smallest label)."""
    votes = F.one_hot(y_train[(f_query @ f_train.T).topk(k, dim=1).indices]).sum(1)
    return votes.argmax(1)


def with_ood(acc: dict) -> dict:
    """``acc`` (domain -> accuracy) plus ``ood``, the mean over the shifted (non-photo) domains; a task without a
    shift domain gets no ``ood`` (there is nothing out of distribution to average), so code that reports OOD checks
    for it (or for ``len(fm.data.domains(task)) > 1``) and says so."""
    shifts = [d for d in acc if d not in ("photo", "ood")]
    return {**acc, "ood": float(np.mean([acc[d] for d in shifts]))} if shifts else dict(acc)


@single_threaded()
def accuracy_by_domain(logits_fn, S, domains, split: str = "test") -> dict:
    """``{domain: accuracy}`` of ``logits_fn(f)`` on ``S[split, domain]``, plus ``ood`` (shift mean)."""
    return with_ood({d: accuracy(logits_fn(S[split, d][0]), S[split, d][1]) for d in domains})


@single_threaded()
def correct_by_domain(logits_fn, S, domains, split: str = "test") -> dict:
    """``{domain: bool [n]}``: which test images ``logits_fn`` gets right (``fm.results.correct``), the input of the
    paired tests in ``fm.results``.  Its mean per domain is :func:`accuracy_by_domain`."""
    from .results import correct
    with torch.no_grad():
        return {d: correct(logits_fn(S[split, d][0]), S[split, d][1]) for d in domains}


def accuracies(correct: dict) -> dict:
    """``{domain: accuracy}`` (plus ``ood``) from ``{domain: per-image correctness}``."""
    return with_ood({d: float(np.mean(c)) for d, c in correct.items()})


def effective_robustness(runs, domains, seeds: int):
    """Effective robustness (Taori et al. 2020) of the first classifier of ``runs`` as a statistic of resampled
    test images, for ``fm.results.bootstrap``.

    ``runs``: per classifier, ``{domain: bool [n] or [seeds, n]}`` (which test images it gets right): the classifier
    measured first (zero-shot), then the reference models (the probes) whose ID-vs-OOD line is the trend.  A
    classifier with one run (no draw, like zero-shot) counts ``seeds`` times, so that every classifier's point is the
    mean over its runs.  Returns ``statistic(*idx, axis=-1)``: the first classifier's OOD accuracy (mean over the
    non-photo domains) minus the least-squares trend of the others at its photo accuracy, on the test images indexed
    by ``idx`` (one index array per domain, ``[..., n_domain]``: one resample per row).
    """
    n = {d: np.asarray(runs[0][d]).shape[-1] for d in domains}
    shifts = [d for d in domains if d != "photo"]

    def per_run(r, d):
        return np.asarray(r[d], dtype=np.int64).reshape(-1, n[d])

    # per image and domain: how many of a classifier's `seeds` runs got it right (integers: every resample is exact)
    hits = {d: np.stack([per_run(r, d).sum(0) * (seeds // len(per_run(r, d))) for r in runs]) for d in domains}

    def statistic(*idx, axis=-1):
        acc = {}
        for d, i in zip(domains, idx):
            counts = np.stack([np.bincount(r, minlength=n[d]) for r in i.reshape(-1, n[d]).astype(int)])
            acc[d] = (hits[d] @ counts.T / (seeds * n[d])).reshape(len(runs), *i.shape[:-1])
        x, t = acc["photo"], np.mean([acc[d] for d in shifts], 0)
        slope = ((x[1:] - x[1:].mean(0)) * (t[1:] - t[1:].mean(0))).sum(0) / ((x[1:] - x[1:].mean(0)) ** 2).sum(0)
        return t[0] - (t[1:].mean(0) + slope * (x[0] - x[1:].mean(0)))

    return statistic


def probe_curve(S, shots, seeds: int, domains=("photo",), train_domain: str = "photo",
                return_correct: bool = False):
    """k-shot linear probes: ``{k: {domain or "ood": [test accuracy per seed]}}``.

    Each probe is trained on ``k`` examples per class of ``train_domain``'s train split (seeded draw)
    and its C is chosen on that domain's validation split.  With ``return_correct``, also
    ``{k: {domain: bool [seeds, n]}}``, which test images each seed's probe gets right (for ``fm.results.beats``).
    """
    from .data import few_shot

    f_tr, y_tr = S["train", train_domain]
    f_va, y_va = S["val", train_domain]
    out, right = {}, {}
    for k in shots:
        runs = []
        for seed in range(seeds):
            idx = torch.as_tensor(few_shot(y_tr.numpy(), k, seed))
            runs.append(correct_by_domain(linear_probe(f_tr[idx], y_tr[idx], f_va, y_va).logits, S, domains))
        accs = [accuracies(r) for r in runs]
        out[k] = {d: [a[d] for a in accs] for d in accs[0]}
        right[k] = {d: np.stack([r[d] for r in runs]) for d in domains}
    return (out, right) if return_correct else out


@single_threaded()
def train_on_views(params, logits_fn, views, y, f_val, y_val, epochs: int, lr: float,
                   weight_decay: float = 0.01, batch_size: int = 256, seed: int = 0) -> Fit:
    """AdamW + cosine schedule, one augmented view per epoch; keeps the epoch best on validation
    (:func:`fmcls_lib.training.fit`).

    ``params`` is an ``nn.Module`` whose parameters are trained and whose best state is restored.
    """
    torch.manual_seed(seed)
    y = torch.as_tensor(y)
    n = views.shape[1]
    opt = torch.optim.AdamW(params.parameters(), lr=lr, eps=1e-4, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * -(-n // batch_size))

    def losses(epoch):
        v = views[epoch % len(views)]
        for idx in torch.randperm(n).split(batch_size):
            yield F.cross_entropy(logits_fn(v[idx]), y[idx])

    return fit(params, opt, losses, lambda: accuracy(logits_fn(f_val), y_val), epochs, scheduler=sched)


def clip_adapter_logits(f, W, A_v, alpha: float, A_t=None, beta: float = 0.0,
                        scale: float = LOGIT_SCALE) -> torch.Tensor:
    """CLIP-Adapter's logits (Gao et al. 2021, eqs. 2-4; the lecture's slide "Comparison with CLIP-Adapter"):

        f* = alpha * A_v(f) + (1 - alpha) * f,    W* = beta * A_t(W) + (1 - beta) * W,
        logits = scale * norm(f*) @ norm(W*).T

    (rows normalised, as CLIP compares unit vectors).  Without a text adapter (``A_t=None`` or ``beta=0``)
    ``W`` is used as given: the visual adapter alone, the library's default."""
    x = alpha * A_v(f) + (1 - alpha) * f
    if A_t is not None and beta:
        W = F.normalize(beta * A_t(W) + (1 - beta) * W, dim=-1)
    return scale * F.normalize(x, dim=-1) @ W.T


def _bottleneck(dim: int, reduction: int) -> torch.nn.Sequential:
    """CLIP-Adapter's adapter: Linear(dim, dim / reduction) - ReLU - Linear(dim / reduction, dim) - ReLU."""
    return torch.nn.Sequential(torch.nn.Linear(dim, dim // reduction, bias=False), torch.nn.ReLU(),
                               torch.nn.Linear(dim // reduction, dim, bias=False), torch.nn.ReLU())


class ClipAdapter(torch.nn.Module):
    """CLIP-Adapter (Gao et al. 2021): residual bottleneck MLPs on the features (:func:`clip_adapter_logits`).

    ``ratio`` is the slide's alpha (visual adapter ``mlp`` = A_v); ``text_ratio`` the slide's beta: 0 (the
    default) builds no text adapter, > 0 adds ``text_mlp`` = A_t on the classifier rows ``W``."""

    def __init__(self, dim: int, W: torch.Tensor, ratio: float = 0.2, reduction: int = 4,
                 scale: float = LOGIT_SCALE, text_ratio: float = 0.0):
        super().__init__()
        self.ratio, self.scale, self.text_ratio = ratio, scale, text_ratio
        self.register_buffer("W", W)
        self.mlp = _bottleneck(dim, reduction)
        # drawn after A_v, and only when asked for: the visual-only adapter's initialisation stays what it was
        self.text_mlp = _bottleneck(W.shape[1], reduction) if text_ratio else None

    def forward(self, f):
        return clip_adapter_logits(f, self.W, self.mlp, self.ratio, self.text_mlp, self.text_ratio, self.scale)


def clip_adapter(views, y_train, W, f_val, y_val, ratio: float = 0.2, epochs: int = 200, lr: float = 1e-3,
                 scale: float = LOGIT_SCALE, seed: int = 0, text_ratio: float = 0.0) -> tuple[ClipAdapter, Fit]:
    """Train a CLIP-Adapter on augmented views ``[E, N, D]``; the epoch is chosen on validation.
    ``text_ratio`` > 0 trains a text adapter too (the slide's beta; default 0: the visual adapter alone)."""
    torch.manual_seed(seed)
    model = ClipAdapter(views.shape[-1], W, ratio, scale=scale, text_ratio=text_ratio)
    return model, train_on_views(model, model, views, y_train, f_val, y_val, epochs=epochs, lr=lr, seed=seed)
