"""Feature cache: a hit (file read + hash check) vs recomputing (render + encode), side by side."""
import os
import tempfile
import time

os.environ["FMCLS_CACHE"] = tempfile.mkdtemp(prefix="fmcls_bench_")

from fmcls_lib import backbones, cache, data, features  # noqa: E402


def main(backbone: str = "tiny", repeats: int = 5):
    clip = backbones.load_clip(backbone)
    ds = data.load("world/shapes", split="train", domain="photo")
    key = features.feature_key(clip, ds)
    miss, hit = [], []
    for _ in range(repeats):
        cache.entry_path("features", key).unlink(missing_ok=True)
        fresh = data.load("world/shapes", split="train", domain="photo")
        t = time.perf_counter()
        features.image_features(clip, fresh, progress=False)
        miss.append(time.perf_counter() - t)
        t = time.perf_counter()
        features.image_features(clip, data.load("world/shapes", split="train", domain="photo"), progress=False)
        hit.append(time.perf_counter() - t)
    m, h = min(miss), min(hit)
    print(f"{len(ds)} images, backbone {clip.id}: recompute {m * 1e3:.1f} ms, cache hit {h * 1e3:.2f} ms, "
          f"ratio {m / h:.0f}x (best of {repeats})")


if __name__ == "__main__":
    main()
