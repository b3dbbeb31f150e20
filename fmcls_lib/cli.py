"""``fmcls build | run | course | check``: the course's command line (also ``python -m fmcls_lib``)."""
from __future__ import annotations

import argparse
import json
import sys
import time


def cmd_build(args) -> int:
    """Train the embedded models from scratch and write them (fp16) + manifest into the package."""
    import torch

    from . import backbones, cache
    from .pretrain import clip as pretrain_clip

    torch.set_num_threads(args.threads or torch.get_num_threads())
    manifest = backbones._manifest()
    for name in args.models:
        key = f"clip-{name}"
        entry = manifest.get(key)
        path = backbones.SHIPPED_DIR / entry["file"] if entry else None
        fresh = (entry is not None and path.exists() and cache.file_sha256(path) == entry["sha256"]
                 and entry["recipe_hash"] == pretrain_clip.recipe_hash(pretrain_clip.RECIPES[name]))
        if fresh and not args.force:
            print(f"{key}: up to date ({entry['build_seconds']} s build, recipe {entry['recipe_hash']})")
            continue
        print(f"{key}: building (recipe {pretrain_clip.recipe_hash(pretrain_clip.RECIPES[name])})")
        manifest[key] = pretrain_clip.build(name, backbones.SHIPPED_DIR)
        cache.atomic_write_bytes(backbones.MANIFEST, json.dumps(manifest, indent=1).encode())
        t0 = time.time()
        manifest[key]["headline"] = pretrain_clip.headline_metrics(backbones.load_clip(name, progress=False))
        manifest[key]["eval_seconds"] = round(time.time() - t0, 1)
        cache.atomic_write_bytes(backbones.MANIFEST, json.dumps(manifest, indent=1).encode())
        print(json.dumps({k: manifest[key][k] for k in ("build_seconds", "params", "headline")}, indent=1))
    return 0


def cmd_check(args) -> int:
    """Exit 1 if a shipped model is missing, corrupt or built from an older recipe than the code's."""
    from . import backbones, cache
    from .pretrain import clip as pretrain_clip

    bad = []
    manifest = backbones._manifest()
    for name in pretrain_clip.SHIPPED:
        entry = manifest.get(f"clip-{name}")
        if entry is None:
            bad.append(f"clip-{name}: not in {backbones.MANIFEST}")
            continue
        path = backbones.SHIPPED_DIR / entry["file"]
        if not path.exists() or cache.file_sha256(path) != entry["sha256"]:
            bad.append(f"clip-{name}: {path} missing or corrupt")
        elif entry["recipe_hash"] != pretrain_clip.recipe_hash(pretrain_clip.RECIPES[name]):
            bad.append(f"clip-{name}: stale (built from recipe {entry['recipe_hash']}, code has "
                       f"{pretrain_clip.recipe_hash(pretrain_clip.RECIPES[name])}); run `fmcls build`")
    print("\n".join(bad) or "shipped models: all present, intact and up to date")
    return 1 if bad else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fmcls", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train the embedded models (skips those that are up to date)")
    b.add_argument("--models", nargs="+", default=None, help="default: every shipped model")
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
    b.add_argument("--threads", type=int, default=None)
    sub.add_parser("check", help="verify the shipped models against the manifest and the recipes")
    from . import course
    course.add_parsers(sub)
    args = p.parse_args(argv)
    if args.cmd == "build" and args.models is None:
        from .pretrain.clip import SHIPPED
        args.models = list(SHIPPED)
    return {"build": cmd_build, "check": cmd_check}.get(args.cmd, getattr(args, "func", None))(args)


if __name__ == "__main__":
    sys.exit(main())
