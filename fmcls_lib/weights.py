"""Weight-space methods, all through one primitive: a weighted sum of state dicts, and WiSE-FT's evaluation.

WiSE-FT (Wortsman et al., CVPR 2022), model soups (Wortsman et al., ICML 2022), the points of a
loss-landscape plane and EMA/SWA checks are all ``combine(state_dicts, coeffs)`` with other coefficients.
Lesson 05's WiSE-FT curve (:func:`wise_curve`, :class:`WiseLogits`) and its analysis (Observations 1 and 2,
the complementarity of the zero-shot and fine-tuned models) evaluate those mixes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import IncompatibleWeightsError, UnknownNameError

KEEP_IF = (">=", ">")  # the greedy recipes' rule: keep on a tie (the lecture's) or only on a gain (the official code's)


def check_compatible(state_dicts) -> None:
    """Same keys, shapes and dtypes in every state dict; otherwise one error naming the first mismatch."""
    ref = state_dicts[0]
    for i, sd in enumerate(state_dicts[1:], start=1):
        if sd.keys() != ref.keys():
            missing = [k for k in ref if k not in sd]
            extra = [k for k in sd if k not in ref]
            first = (f"key {missing[0]!r} is missing from state dict {i}" if missing
                     else f"state dict {i} has the extra key {extra[0]!r}")
            raise IncompatibleWeightsError(f"cannot combine: {first} ({len(missing)} missing, "
                                           f"{len(extra)} extra); all state dicts must come from one architecture")
        for k, v in ref.items():
            if sd[k].shape != v.shape or sd[k].dtype != v.dtype:
                raise IncompatibleWeightsError(
                    f"cannot combine: {k!r} is {tuple(v.shape)} {v.dtype} in state dict 0 but "
                    f"{tuple(sd[k].shape)} {sd[k].dtype} in state dict {i}")


def combine(state_dicts, coeffs) -> dict:
    """Weighted sum of state dicts: WiSE-FT (Wortsman et al. 2022, eq. 1), soups, plane points.

    ``sum_i coeffs[i] * state_dicts[i]`` for every floating-point tensor (parameters and buffers such
    as BatchNorm running statistics).  Coefficients need not sum to 1 (plane points use any).  Integer
    buffers (e.g. BatchNorm's ``num_batches_tracked``) cannot be averaged: they are taken from the state
    dict with the largest coefficient.  The result is on the first state dict's device (the others are moved
    there entry by entry).
    """
    state_dicts, coeffs = list(state_dicts), [float(c) for c in coeffs]
    if len(state_dicts) != len(coeffs) or not state_dicts:
        raise ValueError(f"need one coefficient per state dict; got {len(state_dicts)} state dicts and "
                         f"{len(coeffs)} coefficients")
    check_compatible(state_dicts)
    lead = max(range(len(coeffs)), key=lambda i: coeffs[i])
    out = {}
    for k, v in state_dicts[0].items():
        if v.is_floating_point():
            acc = torch.zeros_like(v, dtype=torch.float64)
            for sd, c in zip(state_dicts, coeffs):
                acc += c * sd[k].to(acc.device).double()
            out[k] = acc.to(v.dtype)
        else:
            out[k] = state_dicts[lead][k].clone()
    return out


def wise(theta_0: dict, theta_1: dict, alpha: float, extrapolate: bool = False) -> dict:
    """WiSE-FT: ``(1 - alpha) * theta_0 + alpha * theta_1`` (0: zero-shot, 1: fine-tuned).

    ``alpha`` outside [0, 1] is extrapolation beyond the two models, which the paper does not study;
    it is rejected unless ``extrapolate=True``.
    """
    if not (0.0 <= alpha <= 1.0) and not extrapolate:
        raise ValueError(f"WiSE-FT mixing coefficient alpha={alpha} is outside [0, 1]; "
                         "pass extrapolate=True to move beyond the endpoints on purpose")
    return combine([theta_0, theta_1], [1.0 - alpha, alpha])


def output_ensemble(logits, coeffs) -> torch.Tensor:
    """Output-space ensemble ``sum_i coeffs[i] * logits[i]`` (WiSE-FT's ``(1 - alpha) f(x, theta_0) + alpha f(x, theta_1)``;
    for LC fine-tuning, where the encoder is shared, it equals the weight-space ensemble exactly)."""
    logits, coeffs = list(logits), [float(c) for c in coeffs]
    if len(logits) != len(coeffs) or not logits:
        raise ValueError(f"need one coefficient per logits tensor; got {len(logits)} and {len(coeffs)}")
    return sum(c * lg for c, lg in zip(coeffs, logits))


# --------------------------------------------------------------------------- model soups

def uniform_soup(state_dicts) -> dict:
    """Uniform soup (Wortsman et al. 2022): the plain average of all ingredients."""
    return combine(state_dicts, [1.0 / len(state_dicts)] * len(state_dicts))


@dataclass(frozen=True)
class GreedySoup:
    """The outcome of Recipe 1 (:func:`greedy_soup`)."""
    soup: dict  # the state dict
    kept: list  # indices of the kept ingredients, in the order they were added
    steps: list  # per ingredient tried: {"ingredient", "before", "after", "kept"}


@dataclass(frozen=True)
class LearnedSoup:
    """A learned soup (:func:`learned_soup`)."""
    soup: dict  # the state dict
    weights: torch.Tensor  # the mixing coefficients, [n] or [n, layers]


def greedy_soup(state_dicts, evaluate, scores, keep_if: str = ">=", order=None) -> GreedySoup:
    """Greedy soup (Wortsman et al. 2022, Recipe 1).

    Ingredients are tried in order of decreasing held-out ``scores`` (or in ``order``); one is kept if the
    held-out accuracy ``evaluate(soup)`` of the soup with it is ``>=`` the soup's so far (the lecture's
    rule) or ``>`` it (the official code's).  The soup is a running mean of the kept ingredients, so
    memory does not grow with their number (``state_dicts`` may be a lazy sequence).
    Returns a :class:`GreedySoup` (soup, kept indices, steps).
    """
    _check_keep_if(keep_if)
    order = list(order) if order is not None else sorted(range(len(scores)), key=lambda i: -scores[i])
    soup, kept, best = state_dicts[order[0]], [order[0]], float(scores[order[0]])
    steps = [{"ingredient": order[0], "before": None, "after": best, "kept": True}]
    for i in order[1:]:
        n = len(kept)
        candidate = combine([soup, state_dicts[i]], [n / (n + 1), 1 / (n + 1)])
        acc = float(evaluate(candidate))
        keep = acc >= best if keep_if == ">=" else acc > best
        steps.append({"ingredient": i, "before": best, "after": acc, "kept": keep})
        if keep:
            soup, best = candidate, acc
            kept.append(i)
    return GreedySoup(soup, kept, steps)


def _check_keep_if(keep_if: str) -> None:
    if keep_if not in KEEP_IF:
        raise UnknownNameError("greedy keep_if rule", keep_if, KEEP_IF)


def greedy_ensemble(logits: list, labels, scores, keep_if: str = ">="):
    """Greedy ensemble: the greedy-soup recipe on averaged logits instead of averaged weights (``keep_if`` as in
    :func:`greedy_soup`)."""
    _check_keep_if(keep_if)
    labels = torch.as_tensor(labels)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    total, kept = logits[order[0]].clone(), [order[0]]
    best = float((total.argmax(1) == labels).float().mean())
    for i in order[1:]:
        cand = total + logits[i]
        acc = float((cand.argmax(1) == labels).float().mean())
        if (acc >= best) if keep_if == ">=" else (acc > best):
            total, best, kept = cand, acc, kept + [i]
    return kept


def angle(theta_0: dict, theta_1: dict, theta_2: dict, keys=None) -> float:
    """Angle (degrees) between ``theta_1 - theta_0`` and ``theta_2 - theta_0`` over the entries ``keys``: the
    parameters, as a loss-landscape plane spans (lessons pass ``[k for k, _ in model.named_parameters()]``, so
    BatchNorm statistics are left out); default every floating-point entry."""
    keys = [k for k in (theta_0 if keys is None else keys) if theta_0[k].is_floating_point()]
    diff = lambda a, k: (a[k].cpu() - theta_0[k].cpu()).double().flatten()  # noqa: E731
    d1 = torch.cat([diff(theta_1, k) for k in keys])
    d2 = torch.cat([diff(theta_2, k) for k in keys])
    cos = float(d1 @ d2 / (d1.norm() * d2.norm()))
    return float(torch.rad2deg(torch.arccos(torch.tensor(max(-1.0, min(1.0, cos))))))


def learned_soup(state_dicts, model, x, y, by_layer: bool = False, epochs: int = 30, lr: float = 0.05,
                 batch_size: int = 256, seed: int = 0):
    """Learned soup (Wortsman et al. 2022, App. I): mixing weights ``softmax(w)`` (one per model, or per
    model and layer) and a logit temperature ``beta``, trained by gradient descent on held-out data
    ``(x, y)`` through ``torch.func.functional_call``, on the model's device (``x``: a tensor or a small
    ``finetune.ImageStream``).  Returns a :class:`LearnedSoup` (weights ``[n]`` or ``[n, layers]``), on the CPU.
    """
    from torch.func import functional_call

    from .backbones import autocast
    from .finetune import as_tensor, device_of

    torch.manual_seed(seed)
    dev = device_of(model)
    keys = [k for k in state_dicts[0] if state_dicts[0][k].is_floating_point()]
    layers = sorted({k.rsplit(".", 1)[0] for k in keys})
    layer_of = {k: layers.index(k.rsplit(".", 1)[0]) for k in keys}
    stacked = {k: torch.stack([sd[k].float().to(dev) for sd in state_dicts]) for k in keys}
    w = torch.zeros(len(state_dicts), len(layers) if by_layer else 1, device=dev, requires_grad=True)
    log_beta = torch.zeros((), device=dev, requires_grad=True)
    opt = torch.optim.Adam([w, log_beta], lr=lr)
    x, y = as_tensor(x), torch.as_tensor(y).to(dev)

    params = {k for k, _ in model.named_parameters()}

    def mixed(weights):
        coeff = torch.softmax(weights, dim=0)  # over models
        # buffers (BatchNorm statistics) follow the same weights but carry no gradient
        return {k: torch.einsum("n,n...->...", (coeff if k in params else coeff.detach())[:, layer_of[k] if by_layer else 0], v)
                for k, v in stacked.items()}

    model.eval()  # BatchNorm uses the mixed running statistics
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(batch_size):
            with autocast(dev):
                out = functional_call(model, mixed(w), (x[idx].to(dev),)).float() * log_beta.exp()
            loss = torch.nn.functional.cross_entropy(out, y[idx.to(dev)])
            opt.zero_grad()
            loss.backward()
            opt.step()
    coeff = torch.softmax(w.detach(), dim=0).cpu()
    soup = {k: v.cpu().clone() for k, v in state_dicts[0].items()}
    soup.update({k: v.detach().to("cpu", state_dicts[0][k].dtype) for k, v in mixed(w.detach()).items()})
    return LearnedSoup(soup, coeff[:, 0] if not by_layer else coeff)


# ------------------------------------------------------------------------------ lesson 05: WiSE-FT's evaluation

def logits_of(model, state_dict: dict, X: dict) -> dict:
    """``{domain: logits}`` of ``model`` with ``state_dict`` loaded, on ``X[domain]``."""
    from .finetune import predict

    model.load_state_dict(state_dict)
    return {d: predict(model, x) for d, x in X.items()}


def wise_curve(model, theta_0: dict, theta_1: dict, alphas, X: dict,
               progress: bool = True) -> dict:
    """``{alpha: {domain: logits}}`` of the weight-space ensembles on ``X[domain]`` (evaluated once, so
    sliders and plots index it).  ``model`` is only used as the architecture to load weights into."""
    return {round(float(a), 4): logits_of(model, wise(theta_0, theta_1, float(a)), X)
            for a in tqdm(list(alphas), disable=not progress, desc="WiSE-FT alphas", leave=False)}


def wise_observations(accs: dict, domain: str) -> tuple[float, float, float]:
    """WiSE-FT's Observations 1 and 2 on ``accs`` (alpha -> {domain: accuracy}) for one ``domain``.

    Returns ``(worst gap, best alpha, margin)``: the smallest ``Acc(mix) - ((1 - a) Acc(theta_0) + a Acc(theta_1))``
    over the grid (Observation 1 holds iff it is >= 0), the best alpha, and how far its accuracy is above the
    better endpoint (Observation 2, strictly, iff > 0).
    """
    a0, a1 = accs[0.0][domain], accs[1.0][domain]
    worst = min(r[domain] - ((1 - a) * a0 + a * a1) for a, r in accs.items())
    best = max(accs, key=lambda a: accs[a][domain])
    return worst, best, accs[best][domain] - max(a0, a1)


def head_logits(f: torch.Tensor, state_dict: dict) -> torch.Tensor:
    """The classifier's linear head on normalised features ``f``: ``f W^T + b`` with the head of ``state_dict``."""
    return f @ state_dict["head.weight"].T + state_dict["head.bias"]


class WiseLogits:
    """``wise_logits(mode, run, alpha, split="test", subset=False)`` -> ``{domain: logits}`` of WiSE-FT between
    ``theta_0`` and the fine-tune ``run`` (a :class:`fmcls_lib.training.Fit`) at ``alpha``, every model evaluated at most once.

    ``images[split]`` / ``feats[split]``: ``{domain: images}`` and ``theta_0``'s encoder features on them;
    ``sub[domain]``: the indices of a fixed test subset (``subset=True``).  Alpha 0 is the zero-shot head on the
    features; LC (``mode == "lc_ft"``) shares ``theta_0``'s encoder, so its WiSE-FT is the output-space ensemble
    of the two heads (no forward pass); E2E loads the mixed weights into ``model`` (the full split, or only the
    subset's images when only the subset is asked for)."""

    def __init__(self, model, theta_0: dict, images: dict, feats: dict, sub: dict):
        self.model, self.theta_0, self.images, self.feats, self.sub = model, theta_0, images, feats, sub
        self.zero_shot = {s: {d: head_logits(f, theta_0) for d, f in fs.items()} for s, fs in feats.items()}
        self.evaluated = {}  # (mode, recipe, alpha, split[, "subset"]) -> {domain: logits}

    def __call__(self, m: str, run, al: float, split: str = "test", subset: bool = False) -> dict:
        key = (m, tuple(sorted(run.recipe.items())), al, split)
        if al == 0:
            lg = self.zero_shot[split]
        elif m == "lc_ft":  # one encoder: the output-space ensemble
            lg = {d: output_ensemble([self.zero_shot[split][d], head_logits(f, run.state_dict)], [1 - al, al])
                  for d, f in self.feats[split].items()}
        elif key in self.evaluated or not subset:
            if key not in self.evaluated:
                self.evaluated[key] = logits_of(self.model, wise(self.theta_0, run.state_dict, al), self.images[split])
            lg = self.evaluated[key]
        else:  # only the subset is needed: evaluate just those images
            if key + ("subset",) not in self.evaluated:
                self.evaluated[key + ("subset",)] = logits_of(
                    self.model, wise(self.theta_0, run.state_dict, al),
                    {d: x[self.sub[d]] for d, x in self.images[split].items()})
            return self.evaluated[key + ("subset",)]
        return {d: v[self.sub[d]] for d, v in lg.items()} if subset else lg


def margin(logits: torch.Tensor) -> torch.Tensor:
    """Per image: the largest logit minus the second largest (how confident the prediction is)."""
    top = logits.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


COMPLEMENTARITY_CASES = ("zero-shot overrides", "zero-shot is overridden")  # among disagreements: the mix follows


def complementarity(z: torch.Tensor, f1: torch.Tensor, mix: torch.Tensor, y: torch.Tensor) -> dict:
    """WiSE-FT's "zero-shot and fine-tuned models are complementary", from the logits of the zero-shot model
    ``z``, the fine-tuned model ``f1`` and their mix ``mix`` (alpha = 0.5) on the same images with labels ``y``.

    ``diversity``: the share of images where the two models disagree and one of them is right; ``disagree``: where
    they disagree at all.  Among the disagreements, the mix either follows zero-shot ("zero-shot overrides") or
    the fine-tuned model ("zero-shot is overridden"): for each, the share of disagreements and the mean margin
    (:func:`margin`) of the zero-shot and of the fine-tuned model, under keys ``(case, quantity)``."""
    pz, pf, pm = z.argmax(1), f1.argmax(1), mix.argmax(1)
    disagree = pz != pf
    out = {"diversity": float((disagree & ((pz == y) | (pf == y))).float().mean()),
           "disagree": float(disagree.float().mean())}
    for case, which in zip(COMPLEMENTARITY_CASES, (disagree & (pm == pz), disagree & (pm == pf))):
        out[case, "share of disagreements"] = float(which.sum() / disagree.sum())
        out[case, "zero-shot margin"] = float(margin(z)[which].mean())
        out[case, "fine-tuned margin"] = float(margin(f1)[which].mean())
    return out


def complementarity_table(per_seed: list):
    """The mean over seeds of :func:`complementarity`'s per-case quantities: a DataFrame with one row per case
    ("zero-shot overrides", "zero-shot is overridden") and one column per quantity."""
    import pandas as pd

    quantities = ("share of disagreements", "zero-shot margin", "fine-tuned margin")
    return pd.DataFrame({case: {q: float(np.mean([p[case, q] for p in per_seed])) for q in quantities}
                         for case in COMPLEMENTARITY_CASES}).T
