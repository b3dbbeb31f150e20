"""The numbers an embedded model is judged by once built (``fmcls build`` writes them into the manifest as its
``headline``): a CLIP's zero-shot and probe accuracies, a self-supervised encoder's k-NN and probes beside the
tiny CLIP's, a generator's recognition report (:func:`fmcls_lib.synthetic.recognition_report`)."""
from __future__ import annotations

import numpy as np
import torch

from . import backbones, data, features, heads, prompts, world


def clip_headline(backbone, task: str = "world/shapes") -> dict:
    """Validation numbers a CLIP build is judged by: zero-shot per domain, full photo probe, never-named."""
    S = features.load_splits(backbone, task, world.DOMAINS, splits=("train", "val"), progress=False)
    classes = world.TASKS[task].classnames
    W = heads.zero_shot_head(backbone, classes, prompts.PHOTO)
    zs = {d: heads.accuracy(heads.logits(S["val", d][0], W), S["val", d][1]) for d in world.DOMAINS}
    probe = heads.linear_probe(*S["train", "photo"], *S["val", "photo"])
    f, y = S["val", "photo"]
    pred = heads.logits(f, W).argmax(1)
    never = [classes.index(c) for c in world.NEVER_NAMED if c in classes]
    return {"task": task, "split": "val", "zero_shot": zs,
            "linear_probe_photo": heads.accuracy(probe.logits(f), y),
            "zero_shot_never_named_classes": float((pred[torch.isin(y, torch.tensor(never))] ==
                                                    y[torch.isin(y, torch.tensor(never))]).float().mean())
            if never else None}


def ssl_headline(ssl, clip_name: str = "tiny", task: str = "world/shapes", shots: int = 16,
                 seeds: int = 3, recorded: bool = False) -> dict:
    """Validation numbers the encoder is judged by, beside the tiny CLIP's on the same splits: k-NN,
    full and ``shots``-shot linear probes on photo, and how often the two disagree (complementarity).

    ``recorded=True`` returns the numbers this function wrote into the manifest when the shipped encoder was
    built (same weights, same defaults) instead of re-fitting the probes; anything else is computed."""
    entry = getattr(ssl, "info", None) or {}
    if recorded and entry.get("headline", {}).get("task") == task and (clip_name, shots, seeds) == ("tiny", 16, 3):
        return {**entry["headline"], "recorded_at_build": True}

    out = {"task": task, "split": "val"}
    preds = {}
    for label, bb in (("ssl", ssl), ("clip", backbones.load_clip(clip_name))):
        S = features.load_splits(bb, task, ("photo",), splits=("train", "val"), progress=False)
        (ft, yt), (fv, yv) = S["train", "photo"], S["val", "photo"]
        knn = heads.knn_predict(ft, yt, fv, k=10)
        probe = heads.linear_probe(ft, yt, fv, yv)
        few = []
        for seed in range(seeds):
            idx = data.few_shot(yt.numpy(), shots, seed)
            few.append(heads.accuracy(heads.linear_probe(ft[idx], yt[idx], fv, yv).logits(fv), yv))
        preds[label] = probe.predict(fv)
        out[label] = {"knn": heads.accuracy(knn, yv), "linear_probe": heads.accuracy(probe.logits(fv), yv),
                      f"probe_{shots}_shot": float(np.mean(few))}
    out["probe_disagreement"] = float((preds["ssl"] != preds["clip"]).float().mean())
    out["both_wrong"] = float(((preds["ssl"] != yv) & (preds["clip"] != yv)).float().mean())
    return out


def headline(kind: str, name: str) -> dict:
    """The headline of embedded model ``<kind>-<name>`` (loaded from the shipped file or the cache)."""
    if kind == "clip":
        return clip_headline(backbones.load_clip(name))
    if kind == "generator":
        from . import synthetic
        return synthetic.recognition_report(backbones.load_generator(name))
    return ssl_headline(backbones.load_ssl(name))


def build_curve(kind: str, name: str, key: str = "knn_shapes_val") -> list[dict]:
    """The training monitor of ``<kind>-<name>``'s build, as its manifest entry recorded it, through every stage:
    a recipe that continues another (``init``) comes after that one's curve.  Rows ``{"model", "step", key}``
    (steps counted across the stages)."""
    from . import models
    chain = [name]
    while models.recipes(kind)[chain[0]].get("init"):
        chain.insert(0, models.recipes(kind)[chain[0]]["init"])
    rows, offset = [], 0
    for stage in chain:
        history = models.weights(kind, stage)[2].get("history", [])  # the build the loaders use: shipped or cached
        rows += [{"model": stage, "step": offset + h["step"], key: h[key]} for h in history if key in h]
        offset += models.recipes(kind)[stage]["steps"]
    return rows
