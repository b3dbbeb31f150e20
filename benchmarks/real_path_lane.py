"""The real-path lane outside pytest: every lesson (smoke settings) on the same-architecture stand-ins
(``fmcls_lib.standins``: an open_clip ViT at 224 px, CIFAR-10 with its STL-10 shift, sd-turbo's pipeline classes,
timm DINO; random weights, no network), once per device, and each lesson's wall time side by side.

    python3 benchmarks/real_path_lane.py --out /tmp/lane            # CUDA when present, then the CPU
    python3 benchmarks/real_path_lane.py --devices cpu --lessons 01_clip_zero_shot

The CPU run hides the GPU from the lessons' kernels (``CUDA_VISIBLE_DEVICES=``); the library picks CUDA by itself
otherwise.  Each device gets its own empty feature cache, so the second run cannot reuse the first one's work.
"""
import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's fmcls_lib, installed or not

from fmcls_lib import course, standins  # noqa: E402


def run(device: str, lessons, out: Path, env: dict) -> dict:
    os.environ.update(env)
    os.environ["FMCLS_CACHE"] = str(out / device / "cache")
    os.environ["FMCLS_FIGURES"] = str(out / device / "figures")
    os.environ["FMCLS_SPLITS"] = "smoke"
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    else:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    times = {}
    for lesson in lessons:
        defaults = course.notebook_params(lesson)
        params = course.resolve_params(lesson, "smoke",
                                       {k: v for k, v in standins.LESSON_PARAMS.items() if k in defaults})
        t = time.perf_counter()
        try:
            course.run_lesson(lesson, params, out / device / "executed", progress=False)
            times[lesson] = time.perf_counter() - t
        except Exception as e:  # report and go on: one broken lesson must not hide the others' times
            times[lesson] = f"FAILED after {time.perf_counter() - t:.0f} s: {type(e).__name__}: {str(e)[-300:]}"
        print(f"{device} {lesson}: {times[lesson] if isinstance(times[lesson], str) else f'{times[lesson]:.1f} s'}",
              flush=True)
    return times


def main():
    import torch
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp") + "/real_path_lane")
    p.add_argument("--devices", nargs="+", default=["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"],
                   choices=["cuda", "cpu"])
    p.add_argument("--lessons", nargs="+", default=course.lessons(), choices=course.lessons())
    a = p.parse_args()
    out = Path(a.out)
    t = time.perf_counter()
    env = standins.make(out / "standins")
    print(f"stand-ins ready in {time.perf_counter() - t:.0f} s: {out / 'standins'}", flush=True)
    rows = {dev: run(dev, a.lessons, out, env) for dev in a.devices}
    print("| lesson | " + " | ".join(f"{d} (s)" for d in rows) + (" | CPU / GPU |" if len(rows) == 2 else " |"))
    print("|---" * (len(rows) + 1 + (len(rows) == 2)) + "|")
    for lesson in a.lessons:
        cells = [rows[d][lesson] for d in rows]
        fmt = [f"{c:.1f}" if isinstance(c, float) else c for c in cells]
        ratio = f" | {cells[1] / cells[0]:.1f}x" if len(cells) == 2 and all(isinstance(c, float) for c in cells) else \
            (" | n/a" if len(cells) == 2 else "")
        print(f"| {lesson} | " + " | ".join(fmt) + ratio + " |")
    failed = [les for d in rows for les, v in rows[d].items() if isinstance(v, str)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
