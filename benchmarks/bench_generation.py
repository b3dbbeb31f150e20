"""Lesson 03's image generation: how many DDIM steps the tiny generator needs, and how many images to denoise at once.

1. Recognition vs steps.  The recognition report's images (``fm.synthetic.recognition``: 16 images per class for
   each prompt vocabulary, seed 0) at 25 DDIM steps, the build's first setting, and at fewer steps from the *same*
   initial noise, so every image at s steps is paired with its 25-step twin: the change in the share a real-photo
   probe recognises is tested by exact McNemar on the pairs.  Rule, fixed before measuring: sample with the fewest
   steps whose probe rate, for both vocabularies, is no more than 0.02 below the 25-step rate.  These are generated
   images, not test images, so the choice touches no test split.  (Real Guidance is not sampled with these steps:
   its noise level is ``round(steps * strength)`` steps of the schedule, and at 8 or 5 steps the 16-shot strength
   0.15 rounds to one step at t = 0, i.e. no noise; it keeps its own 25-step schedule, ``synthetic.RG_STEPS``.)
2. Throughput: milliseconds per image and denoising step against the number of images denoised together.

    python benchmarks/bench_generation.py [--steps 25 15 10 8 5] [--batches 64 256 512]
"""
import argparse
import time

import torch

import fmcls_lib as fm

VOCABULARIES = ("class_names", "caption_vocabulary")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, nargs="+", default=[25, 15, 10, 8, 5])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256, 512])
    ap.add_argument("--task", default="world/shapes")
    a = ap.parse_args()
    fm.seed_everything(0)
    clip, pipe = fm.backbones.load_clip("tiny"), fm.backbones.load_generator("tiny")
    base, rates = a.steps[0], {}
    rec = {}
    for s in a.steps:
        t = time.perf_counter()
        rec[s] = {v: fm.synthetic.recognition(pipe, clip, a.task, v, 16, 4.0, s, 0) for v in VOCABULARIES}
        rates[s] = {v: float(r["probe"].mean()) for v, r in rec[s].items()}
        parts = []
        for v, r in rec[s].items():
            part = f"{v} {rates[s][v]:.3f}"
            if s != base:
                d, p, only_s, only_base = fm.results.mcnemar(r["probe"], rec[base][v]["probe"])
                part += f" ({d:+.3f} vs {base} steps, {only_s}/{only_base} discordant, McNemar p={p:.2g})"
            parts.append(part)
        print(f"{s:2d} DDIM steps: probe recognition {'; '.join(parts)}; {time.perf_counter() - t:.0f} s", flush=True)
    head = pipe.info.get("headline", {})
    if head.get("num_inference_steps") in rates:
        same = all(abs(rates[head["num_inference_steps"]][v] - head[v]["probe"]) < 1e-9 for v in VOCABULARIES)
        print(f"manifest headline ({head['num_inference_steps']} steps) reproduced: {same}")
    ok = [s for s in a.steps if all(rates[s][v] >= rates[base][v] - 0.02 for v in VOCABULARIES)]
    print(f"fewest steps where recognition holds (within 0.02 of {base} steps): {min(ok)} "
          f"(lessons sample with {fm.synthetic.SAMPLING_STEPS})")
    prompts = fm.synthetic.vocabulary_prompts(a.task, "class_names")
    flat = [prompts[i % len(prompts)] for i in range(max(a.batches))]
    speed = {}
    for b in a.batches:
        pipe.batch_size = b
        t = time.perf_counter()
        pipe(flat, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
        speed[b] = 1000 * (time.perf_counter() - t) / len(flat) / 2
    print(f"{torch.get_num_threads()} threads, {len(flat)} images: " +
          ", ".join(f"{b} at once {ms:.1f} ms" for b, ms in speed.items()) + " per image and step")


if __name__ == "__main__":
    main()
