"""Every speed claim of the course in one table: runs each ``bench_*.py`` in its own process (so one
cannot warm another's caches) and prints what each measured, side by side, plus the wall time it took."""
import subprocess
import sys
import time
from pathlib import Path


def main():
    rows = []
    for script in sorted(Path(__file__).parent.glob("bench_*.py")):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.strip()] or [f"failed: {out.stderr.strip()[-200:]}"]
        rows += [(script.stem.removeprefix("bench_"), ln, time.perf_counter() - t if i == 0 else None)
                 for i, ln in enumerate(lines)]
    width = max(len(r[0]) for r in rows)
    print(f"| {'benchmark':{width}s} | measured (same run, same machine) | script wall time |")
    print(f"|{'-' * (width + 2)}|---|---|")
    for name, line, secs in rows:
        print(f"| {name:{width}s} | {line} | {'' if secs is None else f'{secs:.1f} s'} |")


if __name__ == "__main__":
    main()
