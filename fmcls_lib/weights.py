"""Weight-space methods, all through one primitive: a weighted sum of state dicts.

WiSE-FT (Wortsman et al., CVPR 2022), model soups (Wortsman et al., ICML 2022), the points of a
loss-landscape plane and EMA/SWA checks are all ``combine(state_dicts, coeffs)`` with other coefficients.
"""
from __future__ import annotations

import torch

from .errors import IncompatibleWeightsError


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
    dict with the largest coefficient.
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
                acc += c * sd[k].double()
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
