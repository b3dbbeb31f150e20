"""What produced a record: a fingerprint of the library source, the lesson's notebook, its parameters and the
shipped weights, so that a committed record that the current code would not reproduce is caught."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
NOTEBOOKS = ROOT / "notebooks"
WEIGHTS = PACKAGE / "pretrain" / "weights"


@functools.lru_cache(maxsize=None)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _digest(p: Path) -> str:
    st = p.stat()
    return _file_digest(str(p), st.st_mtime_ns, st.st_size)


def notebook_source(lesson: str) -> str:
    """The lesson's cells (type and source only: outputs, execution counts and metadata do not count)."""
    nb = json.loads((NOTEBOOKS / f"{lesson}.ipynb").read_text())
    return json.dumps([[c["cell_type"], "".join(c["source"])] for c in nb["cells"]])


def library_files() -> list[Path]:
    """The library's source and data files, without the shipped weights (those count by their hashes)."""
    return sorted(p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix in (".py", ".json")
                  and WEIGHTS not in p.parents and "__pycache__" not in p.parts)


def fingerprint(lesson: str, params: dict) -> str:
    """sha256 (16 hex digits) of the library source, the notebook's cells, ``params`` and the shipped weights."""
    h = hashlib.sha256()
    h.update(notebook_source(lesson).encode() if (NOTEBOOKS / f"{lesson}.ipynb").exists() else lesson.encode())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    for p in library_files():
        h.update(str(p.relative_to(PACKAGE)).encode())
        h.update(_digest(p).encode())
    for p in sorted(WEIGHTS.glob("*")):
        h.update(p.name.encode())
        h.update(_digest(p).encode())
    return h.hexdigest()[:16]
