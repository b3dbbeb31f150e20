"""``fmcls build | run | course | check``: the course's command line (also ``python -m fmcls_lib``)."""
from __future__ import annotations

import argparse
import json
import sys
import time


def _split_key(key: str):
    from . import backbones
    kind, _, name = key.partition("-")
    if kind not in ("clip", "generator", "ssl") or name not in backbones._kind_module(kind).RECIPES:
        from .errors import UnknownNameError
        valid = [f"{k}-{n}" for k in ("clip", "generator", "ssl") for n in backbones._kind_module(k).RECIPES]
        raise UnknownNameError("embedded model", key, valid)
    return kind, name, backbones._kind_module(kind)


def _headline(kind: str, name: str) -> dict:
    from . import backbones
    if kind == "clip":
        return backbones._kind_module(kind).headline_metrics(backbones.load_clip(name, progress=False))
    if kind == "generator":
        from . import synthetic
        return synthetic.recognition_report(backbones.load_generator(name, progress=False))
    from .pretrain import dino
    return dino.headline_metrics(backbones.load_ssl(name, progress=False))


def cmd_build(args) -> int:
    """Train the embedded models from scratch and write them (fp16) + manifest into the package."""
    import torch

    from . import backbones, cache

    torch.set_num_threads(args.threads or torch.get_num_threads())
    manifest = backbones._manifest()
    for key in args.models:
        kind, name, mod = _split_key(key)
        entry = manifest.get(key)
        path = backbones.SHIPPED_DIR / entry["file"] if entry else None
        want = mod.recipe_hash(mod.RECIPES[name])
        fresh = (entry is not None and path.exists() and cache.file_sha256(path) == entry["sha256"]
                 and entry["recipe_hash"] == want)
        if fresh and not args.force:
            print(f"{key}: up to date ({entry['build_seconds']} s build, recipe {entry['recipe_hash']})")
            continue
        print(f"{key}: building (recipe {want})")
        manifest[key] = mod.build(name, backbones.SHIPPED_DIR)
        cache.atomic_write_bytes(backbones.MANIFEST, json.dumps(manifest, indent=1).encode())
        t0 = time.time()
        manifest[key]["headline"] = _headline(kind, name)
        manifest[key]["eval_seconds"] = round(time.time() - t0, 1)
        cache.atomic_write_bytes(backbones.MANIFEST, json.dumps(manifest, indent=1).encode())
        print(json.dumps({k: manifest[key][k] for k in ("build_seconds", "params", "headline")}, indent=1))
    return 0


def cmd_check(args) -> int:
    """Exit 1 if a shipped model is missing, corrupt or built from an older recipe than the code's, or if a
    committed record (``figures/<lesson>.json``) or the summary ``figures/README.md`` is not what the current code
    produces (:func:`fmcls_lib.provenance.check_records`)."""
    from pathlib import Path

    from . import backbones, cache, course, provenance

    bad = []
    manifest = backbones._manifest()
    for key in backbones.shipped_keys():
        kind, name, mod = _split_key(key)
        entry = manifest.get(key)
        if entry is None:
            bad.append(f"{key}: not in {backbones.MANIFEST}")
            continue
        path = backbones.SHIPPED_DIR / entry["file"]
        want = mod.recipe_hash(mod.RECIPES[name])
        if not path.exists() or cache.file_sha256(path) != entry["sha256"]:
            bad.append(f"{key}: {path} missing or corrupt")
        elif entry["recipe_hash"] != want:
            bad.append(f"{key}: stale (built from recipe {entry['recipe_hash']}, code has {want}); "
                       "run `fmcls build`")
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
                   help="manifest keys such as clip-tiny, generator-tiny, ssl-tiny-dino (default: all shipped)")
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
    b.add_argument("--threads", type=int, default=None)
    ch = sub.add_parser("check", help="verify the shipped models against the manifest and the recipes, and the "
                                      "committed records against the code that makes them")
    ch.add_argument("--figures", default=None, help="the records' folder (default: the course's figures/)")
    from . import course
    course.add_parsers(sub)
    args = p.parse_args(argv)
    if args.cmd == "build" and args.models is None:
        from .backbones import shipped_keys
        args.models = shipped_keys()
    return {"build": cmd_build, "check": cmd_check}.get(args.cmd, getattr(args, "func", None))(args)


if __name__ == "__main__":
    sys.exit(main())
