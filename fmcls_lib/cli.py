"""``fmcls build | run | course | check``: the course's command line (also ``python -m fmcls_lib``)."""
from __future__ import annotations

import argparse
import json
import sys
import time


def _want(kind: str, name: str) -> str:
    from . import models
    return models.recipe_hash(kind, models.recipes(kind)[name])


def _build_shipped(key: str, manifest: dict, force: bool) -> None:
    """Train a shipped model into the package (unless up to date) and record it, with its headline, in the manifest."""
    from . import cache, evaluate, models, pretrain
    kind, name = models.split_key(key)
    entry, want = manifest.get(key), _want(kind, name)
    path = models.SHIPPED_DIR / entry["file"] if entry else None
    fresh = (entry is not None and path.exists() and cache.file_sha256(path) == entry["sha256"]
             and entry["recipe_hash"] == want)
    if fresh and not force:
        print(f"{key}: up to date ({entry['build_seconds']} s build, recipe {entry['recipe_hash']})")
        return
    print(f"{key}: building (recipe {want})")
    manifest[key] = pretrain.module(kind).build(name, models.SHIPPED_DIR)
    cache.atomic_write_bytes(models.MANIFEST, json.dumps(manifest, indent=1).encode())
    t0 = time.time()
    manifest[key]["headline"] = evaluate.headline(kind, name)
    manifest[key]["eval_seconds"] = round(time.time() - t0, 1)
    cache.atomic_write_bytes(models.MANIFEST, json.dumps(manifest, indent=1).encode())
    print(json.dumps({k: manifest[key][k] for k in ("build_seconds", "params", "headline")}, indent=1))


def cmd_build(args) -> int:
    """Train the embedded models from scratch: a shipped one (fp16) + its manifest entry into the package, any other
    (``clip-micro``, ...) into the cache, where the loaders find it."""
    import torch

    from . import models, pretrain

    torch.set_num_threads(args.threads or torch.get_num_threads())
    manifest = models.manifest()
    for key in args.models:
        kind, name = models.split_key(key)
        if key in models.shipped_keys():
            _build_shipped(key, manifest, args.force)
        elif models.cached(kind, name) is not None and not args.force:
            print(f"{key}: up to date in the cache ({models.cached_meta(kind, name)})")
        else:
            print(f"{key}: building into the cache (recipe {_want(kind, name)})")
            print(f"{key}: {pretrain.build_cached(kind, name)['build_seconds']} s build")
    return 0


def cmd_check(args) -> int:
    """Exit 1 if a shipped model is missing, corrupt or built from an older recipe than the code's, or if a
    committed record (``figures/<lesson>.json``) or the summary ``figures/README.md`` is not what the current code
    produces (:func:`fmcls_lib.provenance.check_records`)."""
    from pathlib import Path

    from . import cache, course, models, provenance

    bad = []
    manifest = models.manifest()
    for key in models.shipped_keys():
        kind, name = models.split_key(key)
        entry = manifest.get(key)
        if entry is None:
            bad.append(f"{key}: not in {models.MANIFEST}")
            continue
        path = models.SHIPPED_DIR / entry["file"]
        want = _want(kind, name)
        if not path.exists() or cache.file_sha256(path) != entry["sha256"]:
            bad.append(f"{key}: {path} missing or corrupt")
        elif entry["recipe_hash"] != want:
            bad.append(f"{key}: stale (built from recipe {entry['recipe_hash']}, code has {want}); "
                       f"run `fmcls build --models {key}`")
    print("\n".join(bad) or "shipped models: all present, intact and up to date")
    figures = Path(args.figures) if getattr(args, "figures", None) else provenance.ROOT / "figures"
    stale = provenance.check_records(figures, complete=True)
    readme = figures / "README.md"
    if not stale and (not readme.exists() or readme.read_text() != course.summary_text(figures)):
        stale.append(f"{readme.name}: not the summary of the records in {figures}; "
                     f"{provenance.REGENERATE} (or `fmcls summary`)")
    n = len(list(figures.glob("[0-9][0-9]_*.json")))
    print("\n".join(stale) or f"records: all {n} in {figures} match the current code, notebooks and parameters")
    return 1 if bad or stale else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fmcls", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train the embedded models (skips those that are up to date)")
    b.add_argument("--models", nargs="+", default=None,
                   help="manifest keys such as clip-tiny, generator-tiny, ssl-tiny-dino (default: all shipped); "
                        "one not shipped, such as clip-micro, is built into the cache")
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
    b.add_argument("--threads", type=int, default=None)
    ch = sub.add_parser("check", help="verify the shipped models against the manifest and the recipes, and the "
                                      "committed records against the code that makes them")
    ch.add_argument("--figures", default=None, help="the records' folder (default: the course's figures/)")
    from . import course
    course.add_parsers(sub)
    args = p.parse_args(argv)
    if args.cmd == "build" and args.models is None:
        from .models import shipped_keys
        args.models = shipped_keys()
    return {"build": cmd_build, "check": cmd_check}.get(args.cmd, getattr(args, "func", None))(args)


if __name__ == "__main__":
    sys.exit(main())
