"""Loss-landscape planes through three models (Garipov et al. 2018; model soups' Figure 2).

The plane through ``theta_0`` (the shared initialisation), ``theta_1`` and ``theta_2`` has an orthonormal
basis ``u`` (along ``theta_1 - theta_0``) and ``v`` (``theta_2 - theta_0`` with its ``u`` part removed); the
point at coordinates ``(x, y)`` is ``combine([theta_0, u, v], [1, x, y])``.  Only parameters span the
plane; BatchNorm statistics are recomputed at every point (``torch.optim.swa_utils.update_bn``).
Evaluation runs on the model's device; state dicts may live anywhere (the CPU, as runs return them).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .weights import combine


@dataclass
class Plane:
    theta_0: dict
    u: dict
    v: dict
    keys: list  # parameter entries spanning the plane

    def point(self, x: float, y: float) -> dict:
        return combine([self.theta_0, self.u, self.v], [1.0, x, y])

    def project(self, theta: dict) -> tuple[float, float]:
        d = _flat({k: theta[k].cpu() - self.theta_0[k].cpu() for k in self.keys})
        return float(d @ _flat(self.u, self.keys)), float(d @ _flat(self.v, self.keys))


def _flat(sd, keys=None):
    return torch.cat([sd[k].double().cpu().flatten() for k in (keys or sd)])


def plane(theta_0: dict, theta_1: dict, theta_2: dict, param_keys) -> Plane:
    """Orthonormal basis of the plane through three state dicts (only ``param_keys`` move)."""
    keys = [k for k in param_keys if theta_0[k].is_floating_point()]
    d1 = _flat({k: theta_1[k].cpu() - theta_0[k].cpu() for k in keys})
    d2 = _flat({k: theta_2[k].cpu() - theta_0[k].cpu() for k in keys})
    u = d1 / d1.norm()
    v = d2 - (d2 @ u) * u
    v = v / v.norm()

    def unflatten(vec):
        out, i = {}, 0
        for k, t in theta_0.items():
            if k in keys:
                out[k] = vec[i:i + t.numel()].view_as(t).to(t.dtype)
                i += t.numel()
            else:
                out[k] = torch.zeros_like(t, device="cpu") if t.is_floating_point() else t.cpu().clone()
        return out

    return Plane(theta_0, unflatten(u), unflatten(v), keys)


def has_batchnorm(model) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


BN_BATCH = 512  # images: a streamed BatchNorm set up to this size is decoded whole, for exact statistics


@torch.no_grad()
def evaluate(model, state_dict, x, y, x_bn=None) -> tuple[float, float]:
    """(error, loss) of ``state_dict`` on ``(x, y)``; BatchNorm statistics recomputed on ``x_bn`` first."""
    from torch.optim.swa_utils import update_bn

    from .finetune import ImageStream, as_tensor, batches, device_of, predict

    model.load_state_dict(state_dict)
    if x_bn is not None and has_batchnorm(model):
        # the statistics of x_bn as one batch (exact); a large stream's batches are averaged by update_bn
        big = isinstance(x_bn, ImageStream) and len(x_bn) > BN_BATCH
        update_bn(batches(x_bn, BN_BATCH) if big else [as_tensor(x_bn)], model, device=device_of(model))
    out = predict(model, x)  # eval mode, BatchNorm folded into the convolutions
    y = torch.as_tensor(y).cpu()
    return float((out.argmax(1) != y).float().mean()), float(F.cross_entropy(out, y))


def point_errors(model, points: dict, x, y, x_bn=None) -> dict:
    """``{name: error}`` of each state dict in ``points`` under the plane's convention: BatchNorm statistics
    recomputed on ``x_bn`` (as at every grid point of :func:`plane_grid`), error on ``(x, y)``.  A model that lies
    on the plane gets the value the contour shows at its projection; a soup's own averaged BatchNorm statistics
    (what a held-out accuracy without ``x_bn`` uses) may give another."""
    return {name: evaluate(model, sd, x, y, x_bn)[0] for name, sd in points.items()}


def grid_loop(model, pl: Plane, xs, ys, x, y, x_bn=None, progress: bool = True):
    """Error and loss on the grid, one ``load_state_dict`` (+ ``update_bn``) per point: ``[len(ys), len(xs)]``."""
    err = torch.zeros(len(ys), len(xs))
    loss = torch.zeros(len(ys), len(xs))
    for i, yy in enumerate(tqdm(list(ys), disable=not progress, desc="plane (loop)", leave=False)):
        for j, xx in enumerate(xs):
            err[i, j], loss[i, j] = evaluate(model, pl.point(float(xx), float(yy)), x, y, x_bn)
    return err, loss


@dataclass(frozen=True)
class PlaneGrid:
    """The error on a grid of a plane (:func:`plane_grid`): the inputs of ``plots.plane_contours``."""
    error: torch.Tensor  # [size, size]: error[i, j] at (xs[j], ys[i])
    xs: object
    ys: object
    points: dict  # name -> (x, y) on the plane


def plane_grid(model, points: dict, x, y, x_bn=None, size: int = 21, pad: float = 0.25, batched: bool = False,
               progress: bool = True) -> PlaneGrid:
    """Error on a ``size`` x ``size`` grid of the plane through the first three of ``points`` (name -> state
    dict: theta_0, theta_1, theta_2, then any others to mark), framed around all of them with ``pad`` margin.
    Returns a :class:`PlaneGrid`."""
    import numpy as np

    t0, t1, t2 = list(points.values())[:3]
    pl = plane(t0, t1, t2, [k for k, _ in model.named_parameters()])
    proj = {name: pl.project(sd) for name, sd in points.items()}
    xy = np.array(list(proj.values()))
    margin = pad * (xy.max(0) - xy.min(0) + 1e-6)
    xs = np.linspace(xy[:, 0].min() - margin[0], xy[:, 0].max() + margin[0], size)
    ys = np.linspace(xy[:, 1].min() - margin[1], xy[:, 1].max() + margin[1], size)
    err, _ = (grid_batched if batched else grid_loop)(model, pl, xs, ys, x, y, x_bn, progress=progress)
    return PlaneGrid(err, xs, ys, proj)


class _SplitBatchNorm(torch.nn.Module):
    """BatchNorm whose statistics come from the first ``n`` rows of the batch (the BN data), applied to
    all rows: ``update_bn`` over one batch followed by eval mode, as one pure function (vmap-able)."""

    def __init__(self, bn, n: int):
        super().__init__()
        self.weight, self.bias, self.eps, self.n = bn.weight, bn.bias, bn.eps, n

    def forward(self, x):
        ref = x[: self.n]
        mean = ref.mean((0, 2, 3), keepdim=True)
        var = ref.var((0, 2, 3), keepdim=True, unbiased=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class _EvalBatchNorm(torch.nn.Module):
    """Eval-mode BatchNorm written out, so its running statistics can carry forward-mode derivatives."""

    def __init__(self, bn):
        super().__init__()
        self.weight, self.bias, self.eps = bn.weight, bn.bias, bn.eps
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return ((x - self.running_mean.view(shape)) / torch.sqrt(self.running_var.view(shape) + self.eps)
                * self.weight.view(shape) + self.bias.view(shape))


class _ExplicitLayerNorm(torch.nn.Module):
    """LayerNorm written out: PyTorch's ``layer_norm`` gives a wrong *second-order* forward-mode derivative
    (pytorch/pytorch#196700, as ``batch_norm`` does, #196699), which Appendix K's jvp-over-jvp needs."""

    def __init__(self, ln):
        super().__init__()
        self.weight, self.bias, self.eps = ln.weight, ln.bias, ln.eps
        self.dims = tuple(range(-len(ln.normalized_shape), 0))

    def forward(self, x):
        mean = x.mean(self.dims, keepdim=True)
        var = ((x - mean) ** 2).mean(self.dims, keepdim=True)
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            out = out * self.weight
        return out + self.bias if self.bias is not None else out


def _replace_bn(model, make, layer_norm=None):
    import copy

    m = copy.deepcopy(model).eval()
    for mod in list(m.modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                setattr(mod, cname, make(child))
            elif layer_norm is not None and isinstance(child, torch.nn.LayerNorm):
                setattr(mod, cname, layer_norm(child))
    return m


def _split_bn_copy(model, n):
    return _replace_bn(model, lambda bn: _SplitBatchNorm(bn, n))


@torch.no_grad()
def grid_batched(model, pl: Plane, xs, ys, x, y, x_bn=None, chunk: int = 8, progress: bool = True):
    """The same grid with ``torch.func.vmap`` over ``chunk`` points at a time (weights built inside the
    vmapped function, BatchNorm statistics from ``x_bn`` as in :func:`grid_loop`)."""
    from torch.func import functional_call, vmap

    from .backbones import autocast
    from .finetune import as_tensor, device_of

    dev = device_of(model)
    x, y = as_tensor(x).to(dev), torch.as_tensor(y).to(dev)
    bn = x_bn is not None and has_batchnorm(model)
    x_bn = as_tensor(x_bn).to(dev) if bn else None
    net = _split_bn_copy(model, len(x_bn)) if bn else model.eval()
    inputs = torch.cat([x_bn, x]) if bn else x
    n_bn = len(x_bn) if bn else 0
    names = [k for k, _ in net.named_parameters()]
    base = {k: pl.theta_0[k].float().to(dev) for k in names}
    U = {k: pl.u[k].float().to(dev) for k in names}
    V = {k: pl.v[k].float().to(dev) for k in names}
    buffers = {k: pl.theta_0[k].to(dev) for k, _ in net.named_buffers()}

    def at(c):
        params = {k: base[k] + c[0] * U[k] + c[1] * V[k] for k in names}
        with autocast(dev):
            out = functional_call(net, {**params, **buffers}, (inputs,))[n_bn:].float()
        return (out.argmax(1) != y).float().mean(), F.cross_entropy(out, y)

    coords = torch.tensor([[float(xx), float(yy)] for yy in ys for xx in xs], device=dev)
    errs, losses = [], []
    for c in tqdm(coords.split(chunk), disable=not progress, desc="plane (vmap)", leave=False):
        with math_attention():  # the fused attention kernel has no vmap batching rule (a slow per-point loop)
            e, lo = vmap(at)(c)
        errs.append(e.cpu())
        losses.append(lo.cpu())
    return torch.cat(errs).view(len(ys), len(xs)), torch.cat(losses).view(len(ys), len(xs))


@contextlib.contextmanager
def math_attention():
    """Attention through PyTorch's composite ("math") path inside, which forward-mode AD (``torch.func.jvp``) can
    differentiate.  ``nn.MultiheadAttention``'s fused fast path (``aten::_native_multi_head_attention``, taken in
    eval mode without autograd) and the fused ``scaled_dot_product_attention`` kernels (flash, memory-efficient)
    have no forward-AD formula, and every open_clip ViT reaches them; the math path computes the same attention."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    old = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(old)


def _segment(model, theta_0: dict, theta_1: dict, x):
    """``logits(a)`` of ``theta_0 + a (theta_1 - theta_0)`` on ``x`` and the device it runs on (the model's), through a
    copy of ``model`` that forward-over-forward AD differentiates correctly: BatchNorm in eval mode (its statistics
    interpolated too) and LayerNorm written out."""
    from torch.func import functional_call

    from .finetune import as_tensor, device_of

    dev = device_of(model)
    model = _replace_bn(model, _EvalBatchNorm, _ExplicitLayerNorm)
    x = as_tensor(x).to(dev)
    keys = [k for k in theta_0 if theta_0[k].is_floating_point()]
    fixed = {k: v.to(dev) for k, v in theta_0.items() if k not in keys}
    base = {k: theta_0[k].float().to(dev) for k in keys}
    delta = {k: theta_1[k].float().to(dev) - base[k] for k in keys}

    def logits(a):
        return functional_call(model, {**fixed, **{k: base[k] + a * delta[k] for k in keys}}, (x,))

    return logits, dev


def calibrate_beta(logits: torch.Tensor, y: torch.Tensor, steps: int = 50) -> float:
    """Inverse temperature ``beta`` minimising the cross-entropy of ``beta * logits`` (L-BFGS on log beta)."""
    logits, y = logits.detach().float().cpu(), torch.as_tensor(y).cpu()
    log_beta = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_beta], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits.detach() * log_beta.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_beta.detach().exp())


def soup_ensemble_gap(model, theta_0: dict, theta_1: dict, alpha: float, x, y, beta: float | None = None) -> dict:
    """Model soups' Appendix K: the soup-minus-ensemble loss at ``alpha``, measured and approximated.

    Soup ``theta_alpha = (1 - alpha) theta_0 + alpha theta_1``; ensemble ``(1 - alpha) f(x; theta_0) + alpha f(x; theta_1)``
    (logits); losses are the cross-entropy of ``beta * logits``.  The approximation is

        alpha (1 - alpha) / 2 * ( -d^2/d alpha^2 L_soup  +  beta^2 E_x Var_{Y ~ softmax(beta f(x; theta_alpha))}[f_Y(x; theta_1) - f_Y(x; theta_0)] )

    with the second derivative by forward-over-forward ``torch.func.jvp`` along the segment (BatchNorm in
    eval mode, its statistics interpolated like every other entry).  ``beta=None`` calibrates it on the
    soup's logits (the paper's top row); ``beta=1`` is the bottom row.
    Returns ``{"measured", "approx", "curvature", "variance", "beta", "err_soup", "err_ens"}``.
    """
    from torch.func import jvp

    logits, dev = _segment(model, theta_0, theta_1, x)
    y = torch.as_tensor(y).to(dev)
    scalar = lambda v: torch.tensor(float(v), device=dev)  # noqa: E731
    with torch.no_grad():
        f0, f1, fa = logits(scalar(0.0)), logits(scalar(1.0)), logits(scalar(alpha))
    b = calibrate_beta(fa, y) if beta is None else float(beta)
    soup_loss = lambda a: F.cross_entropy(b * logits(a), y)  # noqa: E731
    one = scalar(1.0)
    with math_attention():
        _, curvature = jvp(lambda a: jvp(soup_loss, (a,), (one,))[1], (scalar(alpha),), (one,))
    ens = (1 - alpha) * f0 + alpha * f1
    p, d = torch.softmax(b * fa, dim=1), f1 - f0
    variance = ((p * d ** 2).sum(1) - (p * d).sum(1) ** 2).mean()
    approx = alpha * (1 - alpha) / 2 * (-curvature + b ** 2 * variance)
    return {"measured": float(F.cross_entropy(b * fa, y) - F.cross_entropy(b * ens, y)), "approx": float(approx),
            "curvature": float(curvature), "variance": float(variance), "beta": b,
            "err_soup": float((fa.argmax(1) != y).float().mean()), "err_ens": float((ens.argmax(1) != y).float().mean())}


def soup_ensemble_gaps(model, theta_0: dict, theta_1: dict, alphas, x, y,
                       betas: dict | None = None) -> dict:
    """:func:`soup_ensemble_gap` for one pair at several ``alphas`` and ``beta`` conventions at once (same numbers).

    The endpoints' logits are computed once per pair; per ``alpha`` one forward-over-forward ``torch.func.jvp``
    gives the soup's logits ``f`` and their first two derivatives ``f'``, ``f''`` along the segment, from which the
    soup loss's curvature follows in closed form for every ``beta``:
    ``d^2/d alpha^2 L = E_x[ beta (p . f'' - f''_y) + beta^2 Var_p(f') ]`` with ``p = softmax(beta f)``.
    ``betas``: name -> beta (``None``: calibrated on the soup's logits); default the paper's two rows.
    Returns ``{name: [result per alpha]}`` with the keys of :func:`soup_ensemble_gap`.
    """
    from torch.func import jvp

    betas = {"beta calibrated": None, "beta = 1": 1.0} if betas is None else betas
    logits, dev = _segment(model, theta_0, theta_1, x)
    y = torch.as_tensor(y).to(dev)
    scalar = lambda v: torch.tensor(float(v), device=dev)  # noqa: E731
    one = scalar(1.0)
    with torch.no_grad(), math_attention():
        f0, f1 = logits(scalar(0.0)), logits(scalar(1.0))
        out = {name: [] for name in betas}
        for alpha in alphas:
            (fa, d1), (_, d2) = jvp(lambda a: jvp(logits, (a,), (one,)), (scalar(alpha),), (one,))
            ens = (1 - alpha) * f0 + alpha * f1
            for name, beta in betas.items():
                b = calibrate_beta(fa, y) if beta is None else float(beta)
                p = torch.softmax(b * fa, dim=1)
                var = lambda v: (p * v ** 2).sum(1) - (p * v).sum(1) ** 2  # noqa: E731
                curvature = (b * ((p * d2).sum(1) - d2.gather(1, y[:, None])[:, 0]) + b ** 2 * var(d1)).mean()
                variance = var(f1 - f0).mean()
                approx = alpha * (1 - alpha) / 2 * (-curvature + b ** 2 * variance)
                out[name].append({"measured": float(F.cross_entropy(b * fa, y) - F.cross_entropy(b * ens, y)),
                                  "approx": float(approx), "curvature": float(curvature), "variance": float(variance),
                                  "beta": b, "err_soup": float((fa.argmax(1) != y).float().mean()),
                                  "err_ens": float((ens.argmax(1) != y).float().mean())})
    return out
