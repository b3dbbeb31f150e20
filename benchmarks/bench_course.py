"""The whole-course run (README's first command), twice into a fresh folder: the first run executes every lesson,
the second finds them unchanged and skips them (resumability).

``python benchmarks/bench_course.py [smoke|full] [--empty-cache]``: with ``--empty-cache`` the first run starts from
an empty ``$FMCLS_CACHE`` (features, generated images and fine-tunes all recomputed; the shipped models load from
the package), which is what a student's first ``make course`` costs.  Figures and records go to the temporary
folder, never to the committed ``figures/``."""
import io
import json
import os
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path


def main(param_set="smoke", empty_cache=False):
    with tempfile.TemporaryDirectory() as out:
        os.environ["FMCLS_FIGURES"] = str(Path(out) / "figures")
        if empty_cache:
            os.environ["FMCLS_CACHE"] = str(Path(out) / "cache")
        from fmcls_lib import course

        runs = []
        for _ in range(2):
            t = time.perf_counter()
            with redirect_stdout(io.StringIO()):
                timings = course.run_course(param_set, out)
            runs.append((time.perf_counter() - t, timings))
        stamps = {p.stem: json.loads(p.read_text())["seconds"] for p in sorted((Path(out) / ".stamps").glob("*.json"))}
    per_lesson = ", ".join(f"{k[:2]} {v:.0f} s" for k, v in stamps.items())
    print(f"course --set {param_set}{' (empty cache)' if empty_cache else ''}: first run {runs[0][0]:.0f} s "
          f"({per_lesson}); second run {runs[1][0]:.1f} s "
          f"({sum(v == 'skipped (unchanged)' for v in runs[1][1].values())} of {len(runs[1][1])} lessons skipped)")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(*args, empty_cache="--empty-cache" in sys.argv)
