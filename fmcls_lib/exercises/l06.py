"""Lesson 06's exercises: the greedy soup (model soups' Recipe 1) and the angle φ between two fine-tuned solutions
(over the parameters, as the loss-landscape plane).

Solutions use only the names a lesson has imported (``torch``, ``np``, ``fm``) and their arguments."""
import torch

from .. import weights
from . import Case, Exercise, register, gen as _gen


class _HeldOut:
    """A held-out accuracy for the exercise's toy ingredients (a linear classifier ``w`` [classes, dim]): the
    fraction of 60 fixed points it classifies like the true ``w*``, so it moves in steps of 1/60 (ties happen)."""

    def __init__(self, seed, classes=4, dim=3, n=60):
        g = _gen(seed)
        self.w_star = torch.randn(classes, dim, generator=g)
        self.x = torch.randn(n, dim, generator=g)
        self.y = (self.x @ self.w_star.T).argmax(1)

    def __call__(self, sd):
        return float(((self.x @ sd["w"].T).argmax(1) == self.y).double().mean())

    def ingredients(self, seed, scales=(1.0, 1.0, 1.0, 3.0, 1.0, 3.0)):
        """``w*`` plus noise of each scale (averaging removes some of it; the noisiest ones spoil a soup)."""
        g = _gen(seed)
        return [{"w": self.w_star + s * torch.randn(self.w_star.shape, generator=g), "b": torch.randn(3, generator=g)}
                for s in scales]

    def __repr__(self):
        return "held_out"


def greedy_soup(thetas, held_out):
    """Recipe 1: the indices of the ingredients the greedy soup keeps, in the order they were added.
    ``thetas``: list of state dicts; ``held_out(state_dict)`` -> held-out accuracy."""
    ingredients = sorted(range(len(thetas)), key=lambda i: -held_out(thetas[i]))   # best first
    kept, best = [ingredients[0]], held_out(thetas[ingredients[0]])
    for i in ingredients[1:]:
        soup = {k: sum(thetas[j][k] for j in kept + [i]) / (len(kept) + 1) for k in thetas[0]}
        if held_out(soup) >= best:
            kept, best = kept + [i], held_out(soup)
    return kept


def _greedy_reference(thetas, held_out):
    return weights.greedy_soup(thetas, held_out, [held_out(t) for t in thetas], keep_if=">=").kept


def _greedy_cases():
    h = _HeldOut(0)
    return [Case((h.ingredients(1), h), "6 ingredients (3 kept)"),
            Case((h.ingredients(3), h), "6 ingredients (4 kept)"),
            Case((h.ingredients(4), h), "6 ingredients, the best alone not first"),
            Case((h.ingredients(2, (1.0,)) * 4, h), "4 identical ingredients (every soup ties with the best: all are kept)"),
            Case((h.ingredients(5, (1.0,)), h), "a single ingredient")]


def _unsorted(thetas, held_out):
    order = list(range(len(thetas)))
    return weights.greedy_soup(thetas, held_out, [held_out(t) for t in thetas], order=order).kept


def _strict(thetas, held_out):
    return weights.greedy_soup(thetas, held_out, [held_out(t) for t in thetas], keep_if=">").kept


def _all_sorted(thetas, held_out):
    return sorted(range(len(thetas)), key=lambda i: -held_out(thetas[i]))


register(Exercise(
    "greedy_soup", "06_soups_and_landscapes", reference=_greedy_reference, solution=greedy_soup, cases=_greedy_cases,
    mistakes=((_strict, "an ingredient is kept when the soup's held-out accuracy does not drop: equal counts as "
                        "kept (the lecture's rule)"),
              (_unsorted, "try the ingredients in order of decreasing held-out accuracy of each one alone"),
              (_all_sorted, "keep an ingredient only if the held-out accuracy of the average with it does not drop "
                            "below the soup's so far"))))


def angle(theta_0, theta_1, theta_2, keys):
    """φ in degrees between θ₁ − θ₀ and θ₂ − θ₀ over the entries ``keys`` of the state dicts (the parameters)."""
    tau_1 = torch.cat([(theta_1[k] - theta_0[k]).double().flatten() for k in keys])
    tau_2 = torch.cat([(theta_2[k] - theta_0[k]).double().flatten() for k in keys])
    return float(torch.rad2deg(torch.arccos(tau_1 @ tau_2 / (tau_1.norm() * tau_2.norm()))))


def _sd(seed, steps=None):
    g = _gen(seed)
    sd = {"conv.weight": torch.randn(3, 2, generator=g), "bn.weight": torch.randn(3, generator=g),
          "bn.running_mean": torch.randn(3, generator=g)}
    if steps is not None:
        sd["bn.num_batches_tracked"] = torch.tensor(steps)
    return sd


PARAMS = ["conv.weight", "bn.weight"]  # the toy state dicts' parameters (their BatchNorm statistics are not)


def _angle_cases():
    t0 = {"w": torch.zeros(2)}
    return [Case((_sd(0), _sd(1), _sd(2), PARAMS), "three random state dicts"),
            Case((_sd(3, 5), _sd(4, 9), _sd(5, 7), PARAMS), "state dicts with BatchNorm statistics and step counter"),
            Case((t0, {"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 2.0])}, ["w"]),
                 "orthogonal task vectors (90 degrees)"),
            Case((t0, {"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([1.0, 1.0])}, ["w"]), "45 degrees")]


def _without_theta_0(t0, t1, t2, keys):
    return angle({k: torch.zeros_like(v) for k, v in t0.items()}, t1, t2, keys)


def _every_entry(t0, t1, t2, keys):
    return angle(t0, t1, t2, [k for k in t0 if t0[k].is_floating_point()])


register(Exercise(
    "angle", "06_soups_and_landscapes", reference=weights.angle, solution=angle, cases=_angle_cases,
    mistakes=((_without_theta_0, "phi is the angle between the task vectors theta_1 - theta_0 and theta_2 - "
                                 "theta_0, not between the weights themselves"),
              (_every_entry, "only the entries keys (the parameters) span the angle, as they span the plane: "
                             "BatchNorm's running statistics are not among them"),
              (lambda t0, t1, t2, keys: angle(t0, t1, t2, keys) * torch.pi / 180,
               "the answer is in degrees, not radians"))))
