"""Synthetic training data from a text-to-image model (He et al., "Is synthetic data from generative
models ready for image recognition?", ICLR 2023), as composable steps on the usual data flow.

Zero-shot setting: prompts (B: class names; LE: language enhancement) -> ``generate`` -> CLIP features
-> optional CLIP Filter (CF) -> a linear head initialised from the zero-shot head, trained with CE or the
soft-target loss (SCE).  Few-shot setting: Real Filtering (RF), Real Guidance (RG: img2img from the real
shots), mix vs phase-wise training.  Fine-tuning the BatchNorm tower with frozen statistics lives in
:mod:`fmcls_lib.finetune` (``Recipe(freeze_bn=True)``).
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import cache, world
from .errors import UnknownNameError
from .heads import accuracy
from .models import GENERATOR_SETTINGS, RG_STEPS, SAMPLING_STEPS, generator_settings  # noqa: F401  (the registry's)
from .results import Scored
from .training import fit

# Real Guidance: noise level t*/T by shots (the paper's schedule 50/40/35/20/15 of 100 steps)
RG_STRENGTH = {1: 0.50, 2: 0.40, 4: 0.35, 8: 0.20, 16: 0.15}

# Language enhancement offline: a word-to-sentence generator over the world's vocabulary, a stand-in
# for the keytotext T5 the paper used.  It only knows the label word, never synonyms.
LE_PATTERNS = ("a photo of a {color} {label}.", "a {size} {label} on the {where}.",
               "a {size} {color} {label}.", "there is a {label} in this picture.",
               "a picture of a {label} that is {color}.", "a {label} at the {where}.",
               "the {label} is {size} and {color}.", "a photographed {color} {label}.")


def basic_prompts(classnames, per_class: int = 1):
    """B: ``"a photo of a {class}."`` for every class; returns ``(prompts, labels)``."""
    return ([f"a photo of {world.article(c)} {c}." for c in classnames for _ in range(per_class)],
            np.repeat(np.arange(len(classnames)), per_class))


def enhanced_prompts(classnames, per_class: int, seed: int = 0):
    """LE: ``per_class`` diverse sentences per label (colour, size and position words drawn at random)."""
    rng = np.random.default_rng(seed)
    prompts = []
    for c in classnames:
        for _ in range(per_class):
            p = LE_PATTERNS[rng.integers(len(LE_PATTERNS))].format(
                label=c, color=list(world.COLORS)[rng.integers(len(world.COLORS))],
                size=list(world.SIZES)[rng.integers(len(world.SIZES))],
                where=("centre", "left", "right", "top", "bottom")[rng.integers(5)])
            prompts.append(" ".join(world.article(b) if a in ("a", "an") else a
                                    for a, b in zip(p.split(), p.split()[1:] + [""])))
    return prompts, np.repeat(np.arange(len(classnames)), per_class)


def _cached(pipe, key: dict, run) -> np.ndarray:
    """Generated images from the disk cache; a pipeline without a weights ``id`` is never cached."""
    if getattr(pipe, "id", None) is None:
        return run().numpy()
    return cache.get_or_compute("synthetic", key, run).numpy()


GEN_BATCH = 64  # images per pipeline call (on 2 CPU cores 64 at once cost ~15 % less per image than 256: cache)


def _batch_size(pipe, batch_size: int | None) -> int:
    """Images per pipeline call: ``batch_size``, else the pipeline's memory bound (``max_batch`` of a diffusers
    pipeline from :func:`fmcls_lib.backbones.load_generator`), else :data:`GEN_BATCH`."""
    return batch_size or getattr(pipe, "max_batch", None) or GEN_BATCH


def sampling_settings(generator: str, guidance_scale: float = GENERATOR_SETTINGS["tiny"]["guidance_scale"],
                      num_inference_steps: int = SAMPLING_STEPS, rg_steps: int = RG_STEPS) -> dict:
    """A lesson's sampling parameters for ``generator``: each one left at the lessons' default (the tiny
    generator's row of :data:`GENERATOR_SETTINGS`) becomes that generator's own setting; a value set on purpose is
    kept.  Returns ``{"guidance_scale", "num_inference_steps", "rg_steps", "settings": the row used}``."""
    own, tiny = generator_settings(generator), GENERATOR_SETTINGS["tiny"]
    given = {"guidance_scale": guidance_scale, "num_inference_steps": num_inference_steps, "rg_steps": rg_steps}
    return {**{k: own[k] if v == tiny[k] else v for k, v in given.items()}, "settings": own["settings"]}


def generate_key(pipe, prompts, per_prompt, guidance_scale, num_inference_steps, seed, batch_size=None) -> dict:
    """The disk-cache key of :func:`generate`'s images."""
    return {"generator": getattr(pipe, "id", None), "prompts": cache.key_digest({"p": list(prompts)}),
            "per_prompt": per_prompt, "guidance": guidance_scale, "steps": num_inference_steps, "seed": seed,
            "batch": _batch_size(pipe, batch_size)}


def generate(pipe, prompts, labels, per_prompt: int = 1, guidance_scale: float = 4.0,
             num_inference_steps: int = 25, seed: int = 0, progress: bool = True, batch_size: int | None = None):
    """``(images uint8 [N,H,W,3], labels)``: ``per_prompt`` images per prompt, cached on disk.

    The images are denoised ``batch_size`` per call (default :func:`_batch_size`) from one seeded noise stream; the
    batch layout may change the noise an image gets and the float rounding, so it is part of the cache key."""
    bs = _batch_size(pipe, batch_size)
    key = generate_key(pipe, prompts, per_prompt, guidance_scale, num_inference_steps, seed, batch_size)
    flat = [p for p in prompts for _ in range(per_prompt)]

    def run():
        g = torch.Generator().manual_seed(seed)
        return torch.from_numpy(np.concatenate([
            pipe(flat[i:i + bs], num_images_per_prompt=1, guidance_scale=guidance_scale,
                 num_inference_steps=num_inference_steps, generator=g).images
            for i in tqdm(range(0, len(flat), bs), disable=not progress, desc="generating images")]))

    return _cached(pipe, key, run), np.repeat(np.asarray(labels), per_prompt)


def real_guidance(pipe, images, labels, classnames, per_image: int, strength: float,
                  guidance_scale: float = 4.0, num_inference_steps: int = RG_STEPS, seed: int = 0, progress=True,
                  batch_size: int | None = None):
    """RG: ``per_image`` img2img variations of every real shot, noised to ``strength`` then denoised
    with its class prompt; ``strength=0`` returns the shots themselves.  Cached on disk.

    The noise level is ``t* = round(num_inference_steps * strength)`` steps of the DDIM schedule: too coarse a
    schedule rounds a small strength to (nearly) no noise, hence :data:`RG_STEPS`.  ``images``: uint8 arrays or a
    real dataset's PIL images (any size), brought to the generator's ``resolution`` (a diffusers pipeline's: 512 px
    for sd-turbo) so that img2img starts from a latent of the size the model was trained on."""
    bs = max(1, _batch_size(pipe, batch_size) // per_image)  # shots per call
    images = as_uint8(images, getattr(pipe, "resolution", None))
    prompts = [f"a photo of {world.article(classnames[y])} {classnames[y]}." for y in labels]
    key = {"generator": getattr(pipe, "id", None), "shots": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
           "labels": np.asarray(labels).tolist(), "per_image": per_image, "strength": strength,
           "guidance": guidance_scale, "steps": num_inference_steps, "seed": seed, "batch": bs}

    def run():
        g = torch.Generator().manual_seed(seed)
        return torch.from_numpy(np.concatenate([
            pipe.img2img(prompts[i:i + bs], images[i:i + bs], strength=strength, num_images_per_prompt=per_image,
                         guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, generator=g).images
            for i in tqdm(range(0, len(prompts), bs), disable=not progress, desc="real guidance")]))

    return _cached(pipe, key, run), np.repeat(np.asarray(labels), per_image)


def as_uint8(images, size: int | None = None) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` from such an array (returned as it is) or a list of PIL images (a real dataset's),
    resized bicubically to ``size`` x ``size`` (default: the first image's size)."""
    if isinstance(images, np.ndarray) or torch.is_tensor(images):
        return np.asarray(images)
    images = list(images)  # PIL images: a list, or a real dataset's lazily decoded sequence
    from PIL import Image
    size = size or images[0].size[0]
    return np.stack([np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC)) for im in images])


CF_MIN_PER_CLASS = 4  # the lessons' CF: per-class top-k fallback so no class is left (nearly) empty


def clip_filter(zs_logits: torch.Tensor, labels, min_per_class: int = 0) -> torch.Tensor:
    """CF: keep an image when the zero-shot probability of its intended class is above 1/C; a class left
    with fewer than ``min_per_class`` images keeps its ``min_per_class`` most confident ones instead
    (the official code's top-k fallback).  Returns a boolean mask."""
    labels = torch.as_tensor(labels)
    C = zs_logits.shape[1]
    p = zs_logits.softmax(1)[torch.arange(len(labels)), labels]
    keep = p > 1.0 / C
    for c in range(C):
        idx = torch.nonzero(labels == c).flatten()
        if 0 < keep[idx].sum() < min_per_class or (keep[idx].sum() == 0 and min_per_class > 0):
            keep[idx[p[idx].topk(min(min_per_class, len(idx))).indices]] = True
    return keep


def soft_target_loss(logits: torch.Tensor, zs_logits: torch.Tensor, labels, sl: float = 0.5,
                     T: float = 2.0) -> torch.Tensor:
    """``sl * SCE + (1 - sl) * CE``: SCE is cross-entropy against ``softmax(zs_logits / T)``, the zero-shot
    classifier's soft labels (official defaults sl = 0.5, T = 2)."""
    log_p = F.log_softmax(logits, dim=1)
    sce = -(F.softmax(zs_logits / T, dim=1) * log_p).sum(1).mean()
    return sl * sce + (1 - sl) * F.nll_loss(log_p, torch.as_tensor(labels))


def real_filter(f_syn: torch.Tensor, y_syn, f_shots: torch.Tensor, y_shots) -> torch.Tensor:
    """RF: drop a synthetic image whose nearest real shot (cosine) belongs to another class."""
    nearest = torch.as_tensor(y_shots)[(f_syn @ f_shots.T).argmax(1)]
    return nearest == torch.as_tensor(y_syn)


class Head(torch.nn.Module):
    """Linear classifier on normalised features, initialised from the zero-shot head ``scale * W``."""

    def __init__(self, W: torch.Tensor, scale: float):
        super().__init__()
        self.linear = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(scale * W)
            self.linear.bias.zero_()

    def forward(self, f):
        return self.linear(f)


def _batches(n: int, batch_size: int, gen: torch.Generator):
    return torch.randperm(n, generator=gen).split(batch_size)


def train_head(W, scale: float, syn=None, real=None, val=None, mode: str = "syn", sl: float = 0.0,
               T: float = 2.0, epochs: int = 30, lr: float = 1e-2, weight_decay: float = 1e-4,
               batch_size: int = 128, real_batch_size: int = 32, seed: int = 0, init: Head | None = None):
    """Train a :class:`Head` and keep the epoch best on ``val`` (:func:`fmcls_lib.training.fit`); returns
    ``(head, training.Fit)``.

    ``syn = (f, y, zs_logits)`` synthetic features (``zs_logits`` needed when ``sl > 0``), ``real = (f, y)``
    real shots, ``val = (f, y)``.  ``mode``: ``"syn"`` or ``"real"`` (one source), ``"mix"`` (every step a
    synthetic batch of ``batch_size`` and a real batch of ``real_batch_size``; SCE on synthetic only),
    ``"syn_real"`` / ``"real_syn"`` (phase-wise: the second phase starts from the first's best epoch).
    ``init``: start from this head instead of the zero-shot one.
    """
    modes = ("syn", "real", "mix", "syn_real", "real_syn")
    if mode not in modes:
        raise UnknownNameError("training mode", mode, modes)
    if mode in ("syn_real", "real_syn"):
        first, second = mode.split("_")
        head, fit1 = train_head(W, scale, syn, real, val, first, sl, T, epochs, lr, weight_decay, batch_size,
                                real_batch_size, seed)
        head2, fit2 = train_head(W, scale, syn, real, val, second, sl, T, epochs, lr, weight_decay, batch_size,
                                 real_batch_size, seed, init=head)
        return head2, replace(fit2, history=fit1.history + fit2.history, seconds=fit1.seconds + fit2.seconds,
                              epochs=2 * epochs)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    head = copy.deepcopy(init) if init is not None else Head(W, scale)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)

    def syn_loss(idx):
        f, y, zs = syn
        lg = head(f[idx])
        return soft_target_loss(lg, zs[idx], y[idx], sl, T) if sl > 0 else F.cross_entropy(lg, y[idx])

    def losses(epoch):
        if mode == "real":
            for idx in _batches(len(real[1]), real_batch_size, gen):
                yield F.cross_entropy(head(real[0][idx]), real[1][idx])
            return
        for idx in _batches(len(syn[1]), batch_size, gen):
            loss = syn_loss(idx)
            if mode == "mix":
                r = torch.randint(0, len(real[1]), (real_batch_size,), generator=gen)
                loss = loss + F.cross_entropy(head(real[0][r]), real[1][r])
            yield loss

    return head, fit(head, opt, losses, lambda: accuracy(head(val[0]), val[1]), epochs)


def split_holdout(n: int, labels, frac: float = 0.2, seed: int = 0):
    """Class-stratified ``(train_idx, holdout_idx)`` of ``n`` synthetic images: in the zero-shot setting
    epochs are chosen on held-out *synthetic* images, since no labelled real image may be used."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    hold = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:max(1, int(frac * (labels == c).sum()))]
                           for c in np.unique(labels)])
    mask = np.zeros(n, bool)
    mask[hold] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


_PROBES: dict = {}


def real_photo_probe(clip, task: str):
    """The linear probe on real photo train features (C chosen on photo validation) that judges whether an
    image shows its class; fitted once per backbone (weights id) and task in a process."""
    from . import features, heads

    if (clip.id, task) not in _PROBES:
        S = features.load_splits(clip, task, ("photo",), splits=("train", "val"), progress=False)
        _PROBES[clip.id, task] = heads.linear_probe(*S["train", "photo"], *S["val", "photo"])
    return _PROBES[clip.id, task]


def label_agreement(clip, task: str, sets: dict, cf_min_per_class: int = CF_MIN_PER_CLASS) -> dict:
    """How clean a synthetic training set is: the share of its images that :func:`real_photo_probe` assigns to
    their intended class, for B, LE and LE+CF (``sets`` as from :func:`synthetic_set`, keys ``"b"``, ``"le"``)."""
    probe = real_photo_probe(clip, task)
    keep = clip_filter(sets["le"]["zs"], sets["le"]["y"], cf_min_per_class)
    parts = {"b": (sets["b"]["f"], sets["b"]["y"]), "le": (sets["le"]["f"], sets["le"]["y"]),
             "le_cf": (sets["le"]["f"][keep], sets["le"]["y"][keep])}
    return {name: float((probe.predict(f) == torch.as_tensor(y)).float().mean()) for name, (f, y) in parts.items()}


def vocabulary_prompts(task: str, vocabulary: str) -> list[str]:
    """One prompt per class: ``"class_names"`` ("a photo of a hexagon.") or ``"caption_vocabulary"`` (the word the
    generator saw in its captions: a synonym such as "six-sided shape" for the world's never-named classes; a real
    dataset's class names are their own caption vocabulary)."""
    from . import data
    classes = data.load(task).classnames
    if vocabulary == "class_names":
        return [f"a photo of {world.article(c)} {c}." for c in classes]
    if vocabulary == "caption_vocabulary":
        return [f"a photo of {world.article(n)} {n}." for n in (world.CAPTION_NAMES.get(c, (c,))[0] for c in classes)]
    raise UnknownNameError("prompt vocabulary", vocabulary, ("class_names", "caption_vocabulary"))


def recognition(pipe, clip, task: str, vocabulary: str, per_class: int = 16, guidance_scale: float = 4.0,
                num_inference_steps: int = SAMPLING_STEPS, seed: int = 0) -> dict:
    """Per generated image (``per_class`` per class from :func:`vocabulary_prompts`): is it recognised as its
    prompt's class by :func:`real_photo_probe` (``"probe"``) and by the zero-shot head (``"zero_shot"``)?
    Bool arrays ``[C * per_class]`` plus the labels ``"y"``."""
    from . import data, heads, prompts as P

    classes = data.load(task).classnames
    imgs, y = generate(pipe, vocabulary_prompts(task, vocabulary), np.arange(len(classes)), per_class,
                       guidance_scale, num_inference_steps, seed, progress=False)
    f = clip.encode_images(imgs)
    W = heads.zero_shot_head(clip, classes, P.PHOTO)
    return {"y": y, "probe": real_photo_probe(clip, task).predict(f).numpy() == y,
            "zero_shot": heads.logits(f, W, heads.logit_scale(clip)).argmax(1).numpy() == y}


def recognition_report(pipe, clip=None, task: str = "world/shapes", per_class: int = 16,
                       guidance_scale: float = 4.0, num_inference_steps: int = SAMPLING_STEPS, seed: int = 0,
                       recorded: bool = False) -> dict:
    """How often a generated image is recognised as its prompt's class: by a linear probe trained on real
    photo features (C on validation) and by the zero-shot head, per class, for class-name prompts
    ("a photo of a hexagon.") and for prompts in the generator's caption vocabulary (its synonyms for
    the never-named classes), plus, on a world task, the zero-shot rate per domain word of the prompt (the world's
    rendering domains; ``{}`` elsewhere).  Images come from :func:`generate` (cached on disk for a generator with a
    weights id).

    ``recorded=True`` returns the report this function wrote into the manifest when the shipped generator was
    built (``fmcls build``: same weights, the same settings, the tiny CLIP judging, full evaluation splits) instead
    of generating the images again; anything else is computed."""
    from . import data, heads, prompts as P

    clip = clip or pipe.clip
    settings = {"task": task, "per_class": per_class, "guidance_scale": guidance_scale,
                "num_inference_steps": num_inference_steps}
    head = (getattr(pipe, "info", None) or {}).get("headline", {})
    if (recorded and head and {k: head.get(k) for k in settings} == settings and seed == 0
            and clip.id == getattr(getattr(pipe, "clip", None), "id", None) and data.split_sizes() == "full"):
        return {**head, "recorded_at_build": True}
    classes = data.load(task).classnames
    W = heads.zero_shot_head(clip, classes, P.PHOTO)
    scale = heads.logit_scale(clip)
    out = dict(settings)
    for name in ("class_names", "caption_vocabulary"):
        r = recognition(pipe, clip, task, name, per_class, guidance_scale, num_inference_steps, seed)
        y = r["y"]
        out[name] = {"probe": float(r["probe"].mean()), "zero_shot": float(r["zero_shot"].mean()),
                     "probe_per_class": {c: float(r["probe"][y == i].mean()) for i, c in enumerate(classes)},
                     "zero_shot_per_class": {c: float(r["zero_shot"][y == i].mean()) for i, c in enumerate(classes)}}
    out["zero_shot_by_domain_word"] = {}
    for d, (word, _) in (world.DOMAIN_WORDS.items() if task in world.TASKS else ()):
        ps = [f"{world.article(word)} {word} of {world.article(n)} {n}." for n in
              (world.CAPTION_NAMES.get(c, (c,))[0] for c in classes)]
        imgs, yy = generate(pipe, ps, np.arange(len(classes)), max(1, per_class // 4), guidance_scale,
                            num_inference_steps, seed, progress=False)
        out["zero_shot_by_domain_word"][d] = float(
            (heads.logits(clip.encode_images(imgs), W, scale).argmax(1).numpy() == yy).mean())
    return out


def recognised(report: dict, vocabulary: str = "caption_vocabulary", judge: str = "probe") -> np.ndarray:
    """Per-image recognition (bool, grouped by class) rebuilt from a :func:`recognition_report`'s per-class
    rates (each a count out of ``per_class``), e.g. for ``fm.results.above``; works on a recorded report too."""
    n = report["per_class"]
    rates = report[vocabulary][f"{judge}_per_class"].values()
    return np.concatenate([np.arange(n) < int(round(r * n)) for r in rates])


# ----------------------------------------------------------------------------- the lesson's studies
#
# Every study trains each method once per seed (``seeds`` of them, seed 0, 1, ...) on the same generated images and
# returns, beside the mean accuracies, the per-image correctness on the test images, ``{domain: bool [seeds, n]}``
# per method: what ``fm.results.beats`` decides a claim on.

def correct_by_domain(logits_fn, S, domains, split: str = "test") -> dict:
    """``{domain: bool [n]}``: which of ``S[split, domain]``'s images ``logits_fn`` classifies correctly."""
    from .results import correct
    with torch.no_grad():
        return {d: correct(logits_fn(S[split, d][0]), S[split, d][1]) for d in domains}


def stack_seeds(runs: list) -> dict:
    """One ``{domain: bool [n]}`` per seed -> ``{domain: bool [seeds, n]}``."""
    return {d: np.stack([r[d] for r in runs]) for d in runs[0]}


def per_seed(correct: dict) -> dict:
    """``{domain: bool [seeds, n]}`` -> ``{domain: accuracy per seed}`` plus ``ood`` (the shifted domains' mean)."""
    acc = {d: np.atleast_2d(c).mean(1) for d, c in correct.items()}
    shifts = [d for d in acc if d != "photo"]
    return {**acc, "ood": np.mean([acc[d] for d in shifts], 0)} if shifts else acc


def accuracy_of(correct: dict) -> dict:
    """``{domain: bool [seeds, n]}`` -> ``{domain: accuracy}`` (mean over seeds) plus ``ood``."""
    return {d: float(a.mean()) for d, a in per_seed(correct).items()}


def interval_table(correct: dict, columns=("photo", "ood")):
    """``{row: {domain: bool [seeds, n]}}`` -> a DataFrame of "mean ± 95 % interval over seeds" per column."""
    import pandas as pd

    from .plots import pm
    return pd.DataFrame({row: {c: pm(a[c]) for c in columns if c in a}
                         for row, a in ((row, per_seed(cc)) for row, cc in correct.items())}).T


def synthetic_set(clip, pipe, classnames, strategy: str, per_class: int, guidance_scale: float = 4.0,
                  num_inference_steps: int = SAMPLING_STEPS, seed: int = 0, progress: bool = True) -> dict:
    """Generate ``per_class`` images per class with prompts B or LE; returns images, labels, CLIP
    features and the zero-shot logits of the generated images (for CF and SCE)."""
    from . import data, features, heads, prompts
    if strategy == "b":
        p, y = basic_prompts(classnames)
        imgs, y = generate(pipe, p, y, per_class, guidance_scale, num_inference_steps, seed, progress)
    elif strategy == "le":
        p, y = enhanced_prompts(classnames, per_class, seed)
        imgs, y = generate(pipe, p, y, 1, guidance_scale, num_inference_steps, seed, progress)
    else:
        raise UnknownNameError("prompt strategy", strategy, ("b", "le"))
    f = features.image_features(clip, data.from_arrays(imgs, y, classnames), progress=False)
    W = heads.zero_shot_head(clip, classnames, prompts.PHOTO)
    return {"images": imgs, "y": torch.as_tensor(y), "f": f, "zs": heads.logits(f, W, heads.logit_scale(clip))}


def evaluation_splits(clip, task: str, domains) -> dict:
    """The features this lesson's studies read: photo train and validation, and test on every domain in ``domains``
    (``{(split, domain): (features, labels)}`` as :func:`fmcls_lib.features.load_splits` gives them)."""
    from . import features
    return {**features.load_splits(clip, task, ("photo",), splits=("train", "val")),
            **features.load_splits(clip, task, domains, splits=("test",))}


ZERO_SHOT_VARIANTS = ("b_ce", "b_sce", "le_ce", "le_sce", "le_cf_ce", "le_cf_sce")


def zero_shot_study(S, W, scale: float, sets: dict, domains, epochs: int = 30, cf_min_per_class: int = CF_MIN_PER_CLASS,
                    seeds: int = 1) -> Scored:
    """Table-2 analogue: heads trained on synthetic features only (B / LE / LE+CF, each with CE and SCE),
    initialised from the zero-shot head; epochs chosen on held-out *synthetic* images (no real label is
    used).  Per seed the held-out synthetic images and the batch order change (the generated images do not).

    Returns a :class:`fmcls_lib.results.Scored`: ``accuracy[method][domain]``, ``correct[method][domain]`` bool
    ``[seeds, n]`` and ``info``, with methods
    ``zero_shot`` (deterministic: one row), ``b_ce`` ... ``le_cf_sce``; ``info["val"][method]``: the photo
    validation accuracy (mean over seeds), for choosing among the variants without looking at test."""
    zs = lambda f: scale * f @ W.T  # noqa: E731
    fv, yv = S["val", "photo"]
    correct = {"zero_shot": {d: c[None] for d, c in correct_by_domain(zs, S, domains).items()}}
    info = {"val": {"zero_shot": accuracy(zs(fv), yv)}}
    for name, src in (("b", "b"), ("le", "le"), ("le_cf", "le")):
        s = sets[src]
        keep = clip_filter(s["zs"], s["y"], cf_min_per_class) if name == "le_cf" else torch.ones(len(s["y"]), dtype=torch.bool)
        idx = torch.nonzero(keep).flatten().numpy()
        info[name] = {"kept": int(keep.sum()), "total": len(keep)}
        for loss, sl in (("ce", 0.0), ("sce", 0.5)):
            runs, val, best = [], [], []
            for seed in range(seeds):
                tr, ho = split_holdout(len(idx), s["y"][idx].numpy(), seed=seed)
                tr, ho = idx[tr], idx[ho]
                head, fit = train_head(W, scale, syn=(s["f"][tr], s["y"][tr], s["zs"][tr]),
                                       val=(s["f"][ho], s["y"][ho]), mode="syn", sl=sl, epochs=epochs, seed=seed)
                runs.append(correct_by_domain(head, S, domains))
                with torch.no_grad():
                    val.append(accuracy(head(fv), yv))
                best.append(fit.best_epoch)
            correct[f"{name}_{loss}"] = stack_seeds(runs)
            info["val"][f"{name}_{loss}"] = float(np.mean(val))
            info[name][f"{loss}_best_epoch"] = best
    return Scored({m: accuracy_of(c) for m, c in correct.items()}, correct, info)


def zero_shot_task(clip, pipe, task: str, domains, per_class: int, epochs: int = 30, guidance_scale: float = 4.0,
                   num_inference_steps: int = SAMPLING_STEPS, seed: int = 0, seeds: int = 1):
    """One task of the Table-2 analogue end to end: B and LE sets (generated with ``seed``), then
    :func:`zero_shot_study` over ``seeds`` training seeds (its :class:`~fmcls_lib.results.Scored`, the sets under
    ``info["sets"]``)."""
    from . import data, features, heads, prompts
    S = evaluation_splits(clip, task, domains)
    names = data.load(task).classnames
    W = heads.zero_shot_head(clip, names, prompts.PHOTO)
    sets = {s: synthetic_set(clip, pipe, names, s, per_class, guidance_scale, num_inference_steps, seed)
            for s in ("b", "le")}
    study = zero_shot_study(S, W, heads.logit_scale(clip), sets, domains, epochs, seeds=seeds)
    return Scored(study.accuracy, study.correct, {**study.info, "sets": sets})


FEW_SHOT_MODES = ("real", "mix", "syn_real", "real_syn")


def few_shot_study(S, W, scale: float, syn: dict, shots, domains, pipe=None, images_train=None,
                   classnames=None, clip=None, epochs: int = 30, rg_per_class: int = 16, guidance_scale=4.0,
                   rg_steps: int = RG_STEPS, seeds: int = 1, progress: bool = True) -> Scored:
    """Few-shot setting, every choice on real photo validation.  Per shot count: real shots only, and
    real + synthetic (``syn``: the LE+CF set) trained by mix training (SCE on synthetic) or phase-wise
    (syn->real, real->syn).  At the largest shot count also Real Filtering and Real Guidance (Table 5; img2img
    on a ``rg_steps`` DDIM schedule).  Per seed the real shots are drawn anew (``data.few_shot(labels, K, seed)``,
    the same draw for every method, so methods are paired) and the batch order changes; Real Guidance varies that
    seed's shots, read from ``images_train`` (the photo train images: uint8 arrays, a real dataset's images or the
    dataset itself; only the shots are decoded).

    Returns a :class:`~fmcls_lib.results.Scored`: ``accuracy[method][shots][domain]``,
    ``correct[method][shots][domain]`` bool ``[seeds, n]``, ``info["rf_kept"]``: the share of synthetic images RF
    keeps (mean over seeds)."""
    from . import data, features
    from .data import few_shot
    f_tr, y_tr = S["train", "photo"]
    val = S["val", "photo"]
    syn_all = (syn["f"], syn["y"], syn["zs"])
    K = max(shots)
    runs = {m: {} for m in (*FEW_SHOT_MODES, "rf", "rg")}
    kept = []
    for k in tqdm(list(shots), disable=not progress, desc="shots"):
        for seed in range(seeds):
            idx = torch.as_tensor(few_shot(y_tr.numpy(), k, seed))
            real = (f_tr[idx], y_tr[idx])
            for mode in FEW_SHOT_MODES:
                head, _ = train_head(W, scale, syn=syn_all, real=real, val=val, mode=mode, sl=0.5, epochs=epochs,
                                     seed=seed)
                runs[mode].setdefault(k, []).append(correct_by_domain(head, S, domains))
            if k != K:
                continue
            keep = real_filter(syn["f"], syn["y"], *real)
            kept.append(float(keep.float().mean()))
            head, _ = train_head(W, scale, syn=tuple(t[keep] for t in syn_all), real=real, val=val, mode="mix",
                                 sl=0.5, epochs=epochs, seed=seed)
            runs["rf"].setdefault(k, []).append(correct_by_domain(head, S, domains))
            if pipe is not None:
                per = max(1, rg_per_class // k)
                imgs, ys = real_guidance(pipe, _take(images_train, idx.numpy()), y_tr[idx].numpy(), classnames, per,
                                         RG_STRENGTH.get(k, 0.15), guidance_scale, rg_steps, seed,
                                         progress=False)
                f = features.image_features(clip, data.from_arrays(imgs, ys, classnames), progress=False)
                rg = (f, torch.as_tensor(ys), scale * f @ W.T)
                head, _ = train_head(W, scale, syn=rg, real=real, val=val, mode="mix", sl=0.5, epochs=epochs,
                                     seed=seed)
                runs["rg"].setdefault(k, []).append(correct_by_domain(head, S, domains))
    correct = {m: {k: stack_seeds(r) for k, r in by_k.items()} for m, by_k in runs.items()}
    acc = {m: {k: accuracy_of(c) for k, c in by_k.items()} for m, by_k in correct.items()}
    return Scored(acc, correct, {"rf_kept": float(np.mean(kept))})


def _take(images, idx):
    """The images at ``idx`` of uint8 ``[N, H, W, 3]`` arrays, a list of PIL images or a dataset (read: only those)."""
    if hasattr(images, "subset"):
        return images.subset(idx).images
    if isinstance(images, (list, tuple)):
        return [images[i] for i in idx]
    return images[idx]


def finetune_images(clip, task: str, domains, shifted_per_class: int | None = None) -> dict:
    """Model-ready images for the fine-tuning tables, as :func:`fmcls_lib.finetune.load_images` gives them (train and
    val on photo, test on every domain), except that a shifted domain's test split may be cut to its first
    ``shifted_per_class`` images per class (a prefix: a fixed, stated subset) — re-encoding with every fine-tuned
    tower is what these tables cost.  Photo test stays whole: the claims are decided on it."""
    from . import data, finetune
    X = finetune.load_images(clip, task, ("photo",))
    for d in domains:
        if d == "photo":
            continue
        full = len(data.load(task, "test", d).labels) // len(data.load(task).classnames)
        if shifted_per_class and shifted_per_class < full and task in world.TASKS:
            scenes, labels = world.task_scenes(task, "test", d, shifted_per_class)
            X["test", d] = (clip.prepare(world.render_many(scenes)), torch.as_tensor(labels))
        else:
            X.update(finetune.load_images(clip, task, (d,), splits=("test",)))
    return X


def _test_correct(model, X) -> dict:
    from . import finetune
    from .results import correct
    return {d: correct(finetune.predict(model, X["test", d][0]), X["test", d][1]) for (s, d) in X if s == "test"}


def frozen_bn_study(clip, W, X, sources: dict, shots: int, epochs: int = 5, lr: float = 3e-4, seeds: int = 1,
                    progress: bool = True) -> Scored:
    """Table-6 analogue: end-to-end fine-tuning of the BatchNorm image tower from the zero-shot
    classifier, with BatchNorm statistics frozen (eval mode) or updated, on ``shots`` images per class drawn
    from each source (``name -> (model-ready images, labels)``; fewer where a class has fewer), a new draw per
    seed; epoch on real photo validation.  ``X``: as from :func:`finetune_images`.  Returns a
    :class:`~fmcls_lib.results.Scored`: ``accuracy[name]["frozen" | "updated"][domain]`` and the same with
    correctness ``{domain: bool [seeds, n]}``."""
    from . import finetune
    from .data import few_shot
    runs = {}
    for name, (x_all, y_all) in sources.items():
        runs[name] = {"frozen": [], "updated": []}
        y_np = np.asarray(y_all)
        for seed in range(seeds):
            idx = torch.as_tensor(few_shot(y_np, min(shots, int(np.bincount(y_np).min())), seed))
            for freeze in (True, False):
                model = finetune.from_zero_shot(clip, W)
                r = finetune.Recipe(epochs=epochs, lr=lr, batch_size=32, freeze_bn=freeze, seed=seed, warmup_steps=5)
                finetune.finetune(model, r, x_all[idx], torch.as_tensor(y_all)[idx], *X["val", "photo"],
                                  progress=progress)
                runs[name]["frozen" if freeze else "updated"].append(_test_correct(model, X))
    correct = {n: {b: stack_seeds(r) for b, r in by.items()} for n, by in runs.items()}
    return Scored({n: {b: accuracy_of(c) for b, c in by.items()} for n, by in correct.items()}, correct)


def tuned_fraction_study(clip, W, x, y, X, fractions=(0.0, 0.1, 0.3, 1.0), epochs: int = 5,
                         lr: float = 3e-4, seeds: int = 1, progress: bool = True) -> Scored:
    """Table-3 analogue: share of parameters tuned vs accuracy, training on synthetic images ``x, y`` with the
    epoch chosen on held-out synthetic images (:func:`split_holdout` with the seed: no real label is used).
    ``0.0`` trains the classifier only (linear classifier, encoder frozen); otherwise the last ``fraction`` of
    the image tower's parameter tensors train with it (BatchNorm frozen).  Returns a
    :class:`~fmcls_lib.results.Scored`: ``accuracy[fraction]`` = ``{"tuned_share", photo/... accuracy}``,
    ``correct[fraction]`` = ``{domain: bool [seeds, n]}``."""
    from . import finetune
    y = torch.as_tensor(y)
    out, correct = {}, {}
    for frac in fractions:
        runs = []
        for seed in range(seeds):
            tr, ho = (torch.as_tensor(i) for i in split_holdout(len(y), y.numpy(), seed=seed))
            model = finetune.from_zero_shot(clip, W)
            r = finetune.Recipe(mode="lc" if frac == 0 else "e2e", train_fraction=frac or 1.0,
                                epochs=epochs, lr=lr if frac else 1e-2, batch_size=32, freeze_bn=True, seed=seed,
                                warmup_steps=5)
            share = finetune.trainable_parameters(model, r) / sum(p.numel() for p in model.parameters())
            finetune.finetune(model, r, x[tr], y[tr], x[ho], y[ho], progress=progress)
            runs.append(_test_correct(model, X))
        correct[frac] = stack_seeds(runs)
        out[frac] = {"tuned_share": share, **accuracy_of(correct[frac])}
    return Scored(out, correct)


def real_vs_synthetic_probe(S, syn: dict, counts, seeds: int = 1) -> dict:
    """Pre-training analogue at probe scale: a linear probe (C on real validation) trained on ``n``
    synthetic vs ``n`` real photo images per class (drawn per seed), scored on real photo test.
    Returns ``{"real" | "synthetic": {n: [accuracy per seed]}}``."""
    from .data import few_shot
    from .heads import linear_probe
    f_tr, y_tr = S["train", "photo"]
    f_te, y_te = S["test", "photo"]
    out = {"real": {}, "synthetic": {}}
    for n in counts:
        for name, (f, y) in (("real", (f_tr, y_tr)), ("synthetic", (syn["f"], syn["y"]))):
            if np.bincount(y.numpy()).min() < n:
                continue
            out[name][n] = []
            for seed in range(seeds):
                idx = torch.as_tensor(few_shot(y.numpy(), n, seed))
                p = linear_probe(f[idx], y[idx], *S["val", "photo"])
                out[name][n].append(accuracy(p.logits(f_te), y_te))
    return out
