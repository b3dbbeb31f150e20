"""CaFo: Prompt, Generate, then Cache (Zhang et al., CVPR 2023), on top of Tip-Adapter's cache model.

Four pre-trained models in a cascade: descriptions (GPT-3's role) enrich the zero-shot classifier; a
text-to-image model (DALL-E's role) expands the K-shot set by K' images per class; CLIP and a
self-supervised encoder (DINO) each hold a cache of that expanded set; and the three predictions are
fused adaptively.  Notation of the slides:

    p_ZS   = f_CLIP W^T                      (W from the descriptions)
    p_CLIP = exp(-beta (1 - f_CLIP F_CLIP^T)) L_onehot
    p_DINO = exp(-beta (1 - f_DINO F_DINO^T)) L_onehot

Adaptive inference as the official code computes it: every logit row is z-scored over the classes; the
weight of each cache is the softmax, over caches, of the dot product of its z-scored logits with the
z-scored zero-shot logits; the fused, z-scored cache logits are added to the zero-shot logits with
alpha.  The slide's formula (``fusion="slide"``) uses the raw logits for both the similarities and the
sum, so its weights saturate to one cache as soon as the logits are large.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import UnknownNameError
from .heads import LOGIT_SCALE, accuracy, single_threaded, train_on_views, with_ood
from .tip_adapter import build_cache, official_grid
from .training import Fit

FUSIONS = ("adaptive", "average", "max", "clip_based", "dino_based", "slide")


def cache_logits(f: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, beta: float) -> torch.Tensor:
    """``exp(-beta (1 - f keys^T)) values``: a cache model's logits (Tip-Adapter's affinity)."""
    return torch.exp(-beta * (1 - f @ keys.T)) @ values


def zscore(x: torch.Tensor) -> torch.Tensor:
    """Each row minus its mean, over its standard deviation (over the classes, the last dimension)."""
    return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)


def fusion_weights(zs: torch.Tensor, caches: list, base: str = "zs", normalize: bool = True) -> torch.Tensor:
    """``[N, M]`` weights of the ``M`` caches: softmax over caches of each cache's similarity to the
    base distribution (``"zs"``, or ``"clip"`` / ``"dino"`` = the first / second cache).  Leading dimensions
    (e.g. one per beta of a search) broadcast."""
    norm = zscore if normalize else (lambda x: x)
    return _weights(norm(zs), [norm(c) for c in caches], base)


def _weights(zs: torch.Tensor, caches: list, base: str) -> torch.Tensor:
    ref = {"zs": zs, "clip": caches[0], "dino": caches[-1]}[base]
    return torch.stack([(c * ref).sum(-1) for c in caches], dim=-1).softmax(dim=-1)


def fuse(zs: torch.Tensor, caches: list, fusion: str = "adaptive") -> torch.Tensor:
    """The fused cache logits that CaFo adds to ``zs`` (``[N, C]``)."""
    if fusion not in FUSIONS:
        raise UnknownNameError("fusion", fusion, FUSIONS)
    if fusion == "slide":
        w = fusion_weights(zs, caches, normalize=False)
        return sum(w[..., i:i + 1] * c for i, c in enumerate(caches))
    z = [zscore(c) for c in caches]
    if fusion == "average":
        return sum(z) / len(z)
    if fusion == "max":
        return torch.stack(z).amax(0)
    base = {"adaptive": "zs", "clip_based": "clip", "dino_based": "dino"}[fusion]
    w = _weights(zscore(zs) if base == "zs" else None, z, base)
    return sum(w[..., i:i + 1] * zi for i, zi in enumerate(z))


def logits(zs: torch.Tensor, caches: list, alpha: float, fusion: str = "adaptive") -> torch.Tensor:
    """``p_ZS + alpha * fuse(p_ZS, [p_CLIP, p_DINO])``."""
    return zs + alpha * fuse(zs, caches, fusion)


@dataclass
class CaFo:
    W: torch.Tensor
    caches: list  # [Cache of CLIP features, Cache of DINO features] (or one of them)
    alpha: float
    beta: float
    fusion: str = "adaptive"
    keys: list | None = None  # learned keys (CaFo's training mode), one per cache
    scale: float = LOGIT_SCALE
    fit: Fit | None = None
    val_accuracy: float | None = None
    sources: tuple | None = None  # which entry of ``feats`` each cache reads (default: 0, 1, ...)

    def parts(self, feats: list) -> tuple[torch.Tensor, list]:
        """``(p_ZS, [p_CLIP, p_DINO])`` for ``feats = [f_CLIP, f_DINO]`` (``feats[0]`` is always CLIP's:
        the zero-shot term needs it even when only the DINO cache is used)."""
        keys = self.keys or [c.keys for c in self.caches]
        src = self.sources or range(len(self.caches))
        zs = self.scale * feats[0] @ self.W.T
        return zs, [cache_logits(feats[i], k, c.values, self.beta) for i, k, c in zip(src, keys, self.caches)]

    def logits(self, feats: list) -> torch.Tensor:
        zs, caches = self.parts(feats)
        return logits(zs, caches, self.alpha, self.fusion)


@single_threaded()
def search(model: CaFo, feats_val: list, y_val, betas=None, alphas=None, max_elems: int = 2**21) -> CaFo:
    """(alpha, beta) with the best validation accuracy (beta outer, alpha inner, first maximum wins).

    Batched as :func:`fmcls_lib.tip_adapter.grid_accuracy` is: the affinities ``f F^T`` do not depend on beta, so
    they are computed once and the betas scored in chunks of at most ``max_elems`` affinities; and for one beta
    the logits ``p_ZS + alpha * fused`` classify an image correctly on an interval of alpha, so every alpha is
    scored against that interval instead of materialising ``[betas, alphas, N, C]`` logits.
    """
    if betas is None or alphas is None:
        betas, alphas = official_grid()
    y = torch.as_tensor(y_val)
    keys = model.keys or [c.keys for c in model.caches]
    src = model.sources or range(len(model.caches))
    zs = model.scale * feats_val[0] @ model.W.T  # [N, C]
    E = [1 - feats_val[i] @ k.T for i, k in zip(src, keys)]  # [N, M] per cache
    gap = zs.gather(1, y[:, None]) - zs  # zs_y - zs_c
    other = torch.arange(zs.shape[1])[None] != y[:, None]
    chunk, grid = max(1, max_elems // max(e.numel() for e in E)), []
    for b in torch.split(betas, chunk):
        fused = fuse(zs, [torch.exp(-b[:, None, None] * e) @ c.values for e, c in zip(E, model.caches)], model.fusion)
        slope = fused.gather(2, y[None, :, None].expand(len(b), -1, 1)) - fused  # [b, N, C]
        thresh = -gap / slope  # right iff gap + alpha * slope > 0 for every other class
        lo = torch.where(other & (slope > 0), thresh, -torch.inf).amax(-1)  # [b, N]
        hi = torch.where(other & (slope < 0), thresh, torch.inf).amin(-1)
        never = (other & (slope == 0) & (gap <= 0)).any(-1)
        a = alphas[None, :, None]
        grid.append(((a > lo[:, None]) & (a < hi[:, None]) & ~never[:, None]).float().mean(-1))  # [b, A]
    grid = torch.cat(grid)
    i = int(torch.argmax(grid.flatten()))  # first maximum in row-major order
    bi, ai = divmod(i, len(alphas))
    model.val_accuracy, model.alpha, model.beta = float(grid[bi, ai]), float(alphas[ai]), float(betas[bi])
    return model


class _LearnableKeys(torch.nn.Module):
    def __init__(self, caches):
        super().__init__()
        self.keys = torch.nn.ParameterList([torch.nn.Parameter(c.keys.clone()) for c in caches])


@single_threaded()
def fit(views: list, y_train, W, feats_val: list, y_val, fusion: str = "adaptive", finetune: bool = False,
        epochs: int = 20, lr: float = 1e-3, init_alpha: float = 1.0, init_beta: float = 1.0, grid=None,
        scale: float = LOGIT_SCALE, seed: int = 0, sources=None) -> CaFo:
    """CaFo with caches on ``views = [CLIP views, DINO views]`` (each ``[E, N, D]`` augmented features of
    the expanded set, or ``[N, D]``); ``sources`` picks which of them get a cache (default: all).  With
    ``finetune`` the caches' keys train (the epoch chosen on validation), then (alpha, beta) are searched
    on validation."""
    sources = tuple(sources) if sources is not None else tuple(range(len(views)))
    caches = [build_cache(views[i], y_train, W.shape[0]) for i in sources]
    model = CaFo(W, caches, init_alpha, init_beta, fusion, scale=scale, sources=sources)
    if finetune:
        learn = _LearnableKeys(caches)
        dims = [v.shape[-1] for v in views]
        stacked = torch.cat([v if v.ndim == 3 else v[None] for v in views], dim=-1)
        val = torch.cat(feats_val, dim=-1)

        def logits_fn(f):
            model.keys = list(learn.keys)
            return model.logits(list(f.split(dims, dim=-1)))

        model.fit = train_on_views(learn, logits_fn, stacked, y_train, val, y_val, epochs=epochs, lr=lr, seed=seed)
        model.keys = [k.detach() for k in learn.keys]
    return search(model, feats_val, y_val, *(grid if grid is not None else (None, None)))


def accuracy_of(model: CaFo, feats: list, y) -> float:
    with torch.no_grad():
        return accuracy(model.logits(feats), y)


# ----------------------------------------------------------------------------- the lesson's experiments

@dataclass
class Bank:
    """Everything CaFo's experiments index: per encoder, photo validation and every domain's test features, and
    augmented views of the real train images (all of them, or those at ``rows``) and of the generated images
    (``k_prime_max`` per class)."""
    S: dict  # encoder -> {(split, domain): (f, y)}
    views: dict  # encoder -> fm.features.ShotViews of the train images (all of them, or the drawn shots')
    gen_views: dict  # encoder -> [E, C * k_prime_max, D]
    gen_images: np.ndarray
    gen_labels: np.ndarray
    y_train: torch.Tensor
    k_prime_max: int

    def __post_init__(self):
        from .features import ShotViews
        self.views = {k: v if isinstance(v, ShotViews) else ShotViews(v) for k, v in self.views.items()}  # [E, N, D]

    def train_views(self, enc: str, idx) -> torch.Tensor:
        """``[E, len(idx), D]`` augmented views of encoder ``enc`` of the train images at positions ``idx``."""
        return self.views[enc].take(idx)


def bank(encoders: dict, task: str, domains, pipe=None, k_prime_max: int = 0, augment_epochs: int = 10,
         guidance_scale: float = 4.0, num_inference_steps: int = 25, seed: int = 0, progress: bool = True,
         shots=None, seeds: int = 1) -> Bank:
    """Features for every experiment, cached on disk: ``encoders`` maps ``"clip"`` / ``"dino"`` to backbones.
    Selection only ever reads photo validation, so that is the one validation split encoded.

    Augmented views (``augment_epochs`` passes) are what the caches are built from.  With ``shots`` (the shot counts
    the experiments use) a real dataset's train split, decoded from its files, gets them for the images that
    ``data.few_shot(labels, k, seed)`` draws for ``k`` in ``shots`` and ``seed < seeds`` only (at most
    ``max(shots) * seeds`` per class instead of the whole split: CIFAR-10's 45 000 x 10 passes); a world task's
    train split is small and in memory, and its views are computed for all of it, as its records were made."""
    from . import data, features, synthetic
    train = data.load(task, "train", "photo")
    classnames = train.classnames
    S, views, gviews = {}, {}, {}
    if k_prime_max:
        p, y = synthetic.basic_prompts(classnames)
        gimg, gy = synthetic.generate(pipe, p, y, k_prime_max, guidance_scale, num_inference_steps, seed, progress)
    else:
        gimg, gy = np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int64)
    for name, bb in encoders.items():
        S[name] = {**features.load_splits(bb, task, ["photo"], splits=("val",), progress=progress),
                   **features.load_splits(bb, task, domains, splits=("test",), progress=progress)}
        views[name] = features.shot_views(bb, train, augment_epochs, shots, seeds, seed, progress=progress)
        gviews[name] = (features.augmented_features(bb, data.from_arrays(gimg, gy, classnames), augment_epochs,
                                                    seed, progress=progress) if len(gy) else None)
    return Bank(S, views, gviews, gimg, gy, torch.as_tensor(train.labels), k_prime_max)


def _expanded_views(b: Bank, enc: str, shots: int, k_prime: int, seed: int):
    from .data import few_shot
    idx = torch.as_tensor(few_shot(b.y_train.numpy(), shots, seed))
    v, y = b.train_views(enc, idx.numpy()), b.y_train[idx]
    if k_prime:
        if k_prime > b.k_prime_max:
            raise ValueError(f"k_prime={k_prime} but the bank holds {b.k_prime_max} generated images per class")
        g = torch.as_tensor(np.flatnonzero(np.arange(len(b.gen_labels)) % b.k_prime_max < k_prime))
        v, y = torch.cat([v, b.gen_views[enc][:, g]], 1), torch.cat([y, torch.as_tensor(b.gen_labels)[g]])
    return v, y


@dataclass(frozen=True)
class RunResult:
    """One CaFo configuration (:func:`run`)."""
    accuracy: dict  # domain (and "ood") -> test accuracy
    model: CaFo
    seconds: float  # training and selection
    correct: dict  # domain -> bool [n]: which test images it gets right (fm.results.correct)


@dataclass(frozen=True)
class Ablation:
    """An ablation table (:func:`ablation`), on the photo test images."""
    accuracy: dict  # row -> shots -> [accuracy per seed]
    correct: dict  # row -> shots -> bool [seeds, n]


@dataclass(frozen=True)
class AgainstTipAdapter:
    """The Figure-5 analogue (:func:`against_tip_adapter`)."""
    curves: dict  # method -> shots -> [photo test accuracy per seed]
    seconds: dict  # method -> [training seconds per seed at the largest shot count]
    by_domain: dict  # "tip_adapter_f" / "cafo" -> domain -> [accuracy per seed] at the largest shot count
    correct: dict  # method -> shots -> bool [seeds, n] on the photo test images


def _digest(*tensors) -> str:
    import hashlib
    h = hashlib.sha1()
    for t in tensors:
        h.update(np.ascontiguousarray(torch.as_tensor(t).numpy()).tobytes())
    return h.hexdigest()


@single_threaded()
def run(b: Bank, W, shots: int, k_prime: int = 0, encoders=("clip", "dino"), fusion: str = "adaptive",
        finetune: bool = True, epochs: int = 20, grid=None, scale: float = LOGIT_SCALE, seed: int = 0,
        domains=None, memo: dict | None = None) -> RunResult:
    """One CaFo configuration: caches of ``encoders`` on K real shots (drawn with ``seed``) + ``k_prime``
    generated images per class, text classifier ``W``; everything selected on photo validation (a :class:`RunResult`).

    ``memo``: a dict shared by several calls; a configuration already in it is returned from it instead of being
    trained again (a lesson's ablation tables share rows: the full CaFo is in every one of them)."""
    import time

    from .results import correct as correct_of
    doms = tuple(domains or [d for (s, d) in b.S["clip"] if s == "test"])
    key = (id(b), _digest(W), shots, k_prime, tuple(encoders), fusion, finetune, epochs,
           None if grid is None else _digest(*grid), float(scale), seed, doms)
    if memo is not None and key in memo:
        return memo[key]
    t0 = time.perf_counter()
    names = ("clip", "dino")  # the zero-shot term always needs CLIP's features: feats[0]
    vs = [_expanded_views(b, e, shots, k_prime, seed) for e in names]
    feats = lambda split, d: [b.S[e][split, d][0] for e in names]  # noqa: E731
    y_val = b.S["clip"]["val", "photo"][1]
    model = fit([v for v, _ in vs], vs[0][1], W, feats("val", "photo"), y_val, fusion=fusion, finetune=finetune,
                epochs=epochs, grid=grid, scale=scale, seed=seed, sources=[names.index(e) for e in encoders])
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        right = {d: correct_of(model.logits(feats("test", d)), b.S["clip"]["test", d][1]) for d in doms}
    out = RunResult(with_ood({d: float(r.mean()) for d, r in right.items()}), model, seconds, right)
    if memo is not None:
        memo[key] = out
    return out


def ablation(b: Bank, configs: dict, shots, seeds: int, memo: dict | None = None, **kw) -> Ablation:
    """Every row of an ablation table at every shot count, over ``seeds`` draws: ``configs`` maps a row name to
    :func:`run` keyword arguments (``W``, ``k_prime``, ``encoders``, ``fusion``); ``kw`` are shared by all rows.
    Returns an :class:`Ablation`: ``accuracy[row][k]`` = [photo test accuracy per seed], ``correct[row][k]`` =
    bool ``[seeds, n]`` on the photo test images."""
    acc, right = {}, {}
    for name, cfg in configs.items():
        cfg = {**kw, **cfg}
        W = cfg.pop("W")
        runs = {k: [run(b, W, k, seed=s, memo=memo, **cfg) for s in range(seeds)] for k in shots}
        acc[name] = {k: [r.accuracy["photo"] for r in rs] for k, rs in runs.items()}
        right[name] = {k: np.stack([r.correct["photo"] for r in rs]) for k, rs in runs.items()}
    return Ablation(acc, right)


@single_threaded()
def against_tip_adapter(b: Bank, W_plain, W_desc, shots, k_prime: int, grid=None, scale: float = LOGIT_SCALE,
                        epochs: int = 20, seeds: int = 1, domains=None, memo: dict | None = None):
    """Figure-5 analogue: zero-shot CLIP and Tip-Adapter / Tip-Adapter-F (cache of the K real shots, classifier
    ``W_plain``) against CaFo (``W_desc``, ``k_prime`` generated images per class), every choice on photo
    validation, over ``seeds`` few-shot draws (``memo``: as in :func:`run`).

    Returns an :class:`AgainstTipAdapter`: ``curves[method][k]`` = [photo test accuracy per seed],
    ``seconds[method]`` = [training seconds per seed at the largest shot count], ``by_domain[method][domain]`` =
    [per seed] for Tip-Adapter-F and CaFo at the largest shot count, and ``correct[method][k]`` = bool
    ``[seeds, n]`` on the photo test images (zero-shot draws nothing: its one row repeated)."""
    import time

    from . import tip_adapter
    from .data import few_shot
    from .heads import correct_by_domain, logits as zs_logits
    from .results import correct as correct_of

    f, y = b.S["clip"]["test", "photo"]
    fv, yv = b.S["clip"]["val", "photo"]
    doms = domains or [d for (s, d) in b.S["clip"] if s == "test"]
    zs = correct_of(zs_logits(f, W_plain, scale), y)
    methods = ("zero_shot", "tip_adapter", "tip_adapter_f", "cafo")
    right = {m: {k: [] for k in shots} for m in methods}
    seconds = {m: [] for m in methods[1:]}
    by_domain = {"tip_adapter_f": {}, "cafo": {}}
    K = max(shots)
    for k in sorted(shots):
        for seed in range(seeds):
            idx = torch.as_tensor(few_shot(b.y_train.numpy(), k, seed))
            right["zero_shot"][k].append(zs)
            for m, ft in (("tip_adapter", False), ("tip_adapter_f", True)):
                t0 = time.perf_counter()
                tip = tip_adapter.fit(b.train_views("clip", idx.numpy()), b.y_train[idx], W_plain, fv, yv, finetune=ft,
                                      epochs=epochs, grid=grid, scale=scale, seed=seed)
                if k == K:
                    seconds[m].append(time.perf_counter() - t0)
                with torch.no_grad():
                    right[m][k].append(correct_of(tip.logits(f), y))
            cafo = run(b, W_desc, k, k_prime, grid=grid, scale=scale, epochs=epochs, seed=seed, domains=doms,
                       memo=memo)
            right["cafo"][k].append(cafo.correct["photo"])
            if k == K:
                seconds["cafo"].append(cafo.seconds)
                tip_acc = with_ood({d: float(c.mean()) for d, c in correct_by_domain(tip.logits, b.S["clip"], doms).items()})
                for m, a in (("tip_adapter_f", tip_acc), ("cafo", cafo.accuracy)):
                    for d, v in a.items():
                        by_domain[m].setdefault(d, []).append(v)
    right = {m: {k: np.stack(v) for k, v in rk.items()} for m, rk in right.items()}
    curves = {m: {k: c.mean(1).tolist() for k, c in rk.items()} for m, rk in right.items()}
    return AgainstTipAdapter(curves, seconds, by_domain, right)
