"""Peak RSS over a 50 000-image CIFAR-format stand-in: an older commit's code vs this tree's, each in a fresh process
with an empty feature cache (``resource.getrusage`` for the process; with its loader workers, their proportional set
sizes summed from /proc every 20 ms, so shared pages count once).  ``--part features``: ``features.image_features``
of the train split; ``--part finetune``: what lessons 05/06 do with it — ``finetune.load_images`` of the train split,
then ``finetune.predict`` over all of it (the old code holds the split as one 224-px float tensor: ~0.6 MB an image,
so run the old side with ``--per-class 600`` or less on a machine of this size; the new side streams).

    python3 benchmarks/bench_memory.py [--old-rev db4b97f] [--per-class 5000] [--backbone micro|vit224]
    python3 benchmarks/bench_memory.py --part finetune --backbone vit224 --per-class 600

``micro`` is the test CLIP (32 px input); ``vit224`` a random two-layer open_clip ViT at 224 px, so that the
224-px input tensors the real backbones need are in the measurement.

The training split is 90 % of the stand-in's 50 000 images (10 % is validation), so 45 000 images are encoded.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, sys, threading, time
import torchvision.datasets.cifar as tv_cifar
tv_cifar.check_integrity = lambda *a, **k: True  # older code has no FMCLS_DATASET_CHECKSUMS switch
from fmcls_lib import backbones, data, features
import torch
if sys.argv[1] == "vit224":  # a random two-layer open_clip ViT at 224 px: the real path's 224-px tensors, no download
    import open_clip, torch
    torch.manual_seed(0)
    model = open_clip.CLIP(64, {"image_size": 224, "patch_size": 32, "width": 64, "layers": 2},
                           {"width": 64, "heads": 1, "layers": 1}).eval()
    model.visual.image_mean, model.visual.image_std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    clip = backbones.CLIPBackbone("vit224-random", model, None, open_clip.image_transform(224, is_train=False),
                                  "0" * 64, torch.device("cpu"))
else:
    if sys.argv[2] == "build" and sys.argv[1] == "micro":  # today's loaders never train: build the test CLIP first
        try:
            from fmcls_lib import models, pretrain
            if models.cached("clip", "micro") is None:
                pretrain.build_cached("clip", "micro", progress=False)
        except ImportError:  # an older revision (--old-rev), whose loader trains it itself
            pass
    clip = backbones.load_clip(sys.argv[1])
if sys.argv[2] == "build":  # the backbone is built (micro trains) in its own process, not counted
    sys.exit()
ds = data.load("cifar10", "train")
part = sys.argv[3]


def pss_mb(pid):  # proportional set size of pid and its descendants (loader workers): shared pages split, from /proc
    try:
        kb = int(next(l for l in open(f"/proc/{pid}/smaps_rollup") if l.startswith("Pss:")).split()[1])
        kids = [int(c) for t in os.listdir(f"/proc/{pid}/task") for c in open(f"/proc/{pid}/task/{t}/children").read().split()]
    except (OSError, StopIteration):
        return 0.0
    return kb / 1024 + sum(pss_mb(c) for c in kids)


peak, done = [0.0], threading.Event()
def sample():
    while not done.wait(0.02):
        peak[0] = max(peak[0], pss_mb(os.getpid()))
threading.Thread(target=sample, daemon=True).start()
before = pss_mb(os.getpid())
t = time.perf_counter()
if part == "features":
    f = features.image_features(clip, ds, progress=False)
else:  # lessons 05/06: the train split as fine-tuning sees it, and one pass of the classifier over it
    from fmcls_lib import finetune
    x, y = finetune.load_images(clip, "cifar10", ("photo",), splits=("train",))["train", "photo"]
    W = torch.nn.functional.normalize(torch.randn(10, clip.model.visual.output_dim), dim=-1)
    finetune.predict(finetune.from_zero_shot(clip, W), x)
seconds = time.perf_counter() - t
done.set()
print(json.dumps({"code": features.__file__, "n": len(ds), "seconds": seconds, "pss_before_mb": before,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_with_workers_mb": peak[0]}))
"""


def measure(code_root: Path, data_root: Path, cache_root: Path, backbone: str, part: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_root), "FMCLS_DATA": str(data_root), "FMCLS_CACHE": str(cache_root),
           "FMCLS_DATASET_CHECKSUMS": "off", "HF_HUB_OFFLINE": "1", "FMCLS_SPLITS": "full"}
    run = [sys.executable, "-c", CHILD, backbone]
    subprocess.run(run + ["build", part], env=env, cwd=code_root, check=True)
    shutil.rmtree(cache_root / "features", ignore_errors=True)  # always compute
    r = subprocess.run(run + ["measure", part], env=env, cwd=code_root, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"the measurement with {code_root} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-rev", default="db4b97f", help="commit of the code before streaming")
    ap.add_argument("--per-class", type=int, default=5000)
    ap.add_argument("--backbone", default="micro", help="micro, vit224, or a load_clip name")
    ap.add_argument("--part", default="features", choices=["features", "finetune"])
    ap.add_argument("--only", default="both", choices=["both", "before", "after"])
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "fmcls_bench_memory"))
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from fmcls_lib.standins import datasets

    data_root = Path(a.root) / "data"
    datasets.write_cifar10(data_root, train_per_class=a.per_class, test_per_class=10)
    old = Path(a.root) / f"code-{a.old_rev}"
    if not (old / "fmcls_lib").exists():
        old.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", a.old_rev, "fmcls_lib"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    for label, root, cache_root in ((f"before ({a.old_rev})", old, Path(a.root) / "cache-before"),
                                    ("after (this tree)", REPO, Path(a.root) / "cache-after")):
        if a.only != "both" and not label.startswith(a.only):
            continue
        r = measure(root, data_root, cache_root, a.backbone, a.part)
        print(f"{label}, {a.part}: {r['n']} images, backbone {a.backbone}: peak RSS {r['peak_rss_mb']:.0f} MB in the main "
              f"process; {r['peak_with_workers_mb']:.0f} MB with its loader workers (sampled sum of PSS; "
              f"{r['pss_before_mb']:.0f} MB before the call), {r['seconds']:.0f} s  [{r['code']}]")


if __name__ == "__main__":
    main()
