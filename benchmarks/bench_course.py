"""The whole-course run (README's first command) with the smoke parameter set, twice into a fresh folder:
the first run executes every lesson, the second finds them unchanged and skips them (resumability).
Models and feature caches are whatever $FMCLS_CACHE already holds; figures go to the temporary folder."""
import io
import json
import os
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path


def main(param_set="smoke"):
    from fmcls_lib import course

    with tempfile.TemporaryDirectory() as out:
        runs = []
        for _ in range(2):
            t = time.perf_counter()
            with redirect_stdout(io.StringIO()):
                timings = course.run_course(param_set, out)
            runs.append((time.perf_counter() - t, timings))
        stamps = {p.stem: json.loads(p.read_text())["seconds"] for p in sorted((Path(out) / ".stamps").glob("*.json"))}
    per_lesson = ", ".join(f"{k[:2]} {v:.0f} s" for k, v in stamps.items())
    print(f"course --set {param_set}: first run {runs[0][0]:.0f} s ({per_lesson}); "
          f"second run {runs[1][0]:.1f} s ({sum(v == 'skipped (unchanged)' for v in runs[1][1].values())} of "
          f"{len(runs[1][1])} lessons skipped)")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main(*sys.argv[1:])
