"""Lessons run end to end with non-default parameters; assertions read the record each one writes.

(``make test`` also runs every lesson with the ``smoke`` parameter set under ``pytest --nbval-lax``.)
"""
import json
from pathlib import Path

import pytest

from fmcls_lib import course, results


def test_lesson_01_with_other_task_shots_and_seeds(tmp_path):
    params = {"task": "world/colors", "shots": [2, 8], "seeds": 2, "smoke": False, "interactive": False}
    out = course.run_lesson("01_clip_zero_shot", course.resolve_params("01_clip_zero_shot", None, params),
                            tmp_path, progress=False)
    assert out.exists()
    rec = results.read("01_clip_zero_shot")
    assert rec["params"]["task"] == "world/colors" and rec["params"]["shots"] == [2, 8]
    m = rec["metrics"]
    assert set(m["linear_probe_shots"]) == {"2", "8"}
    domains = {"photo", "sketch", "painting", "pixel", "ood"}
    for method in ("zero_shot", "linear_probe", "linear_probe_full", "zero_shot_openai_80"):
        assert set(m[method]) == domains
        assert all(0.0 <= v <= 1.0 for v in m[method].values())
    assert m["zero_shot"]["ood"] == pytest.approx(
        sum(m["zero_shot"][d] for d in ("sketch", "painting", "pixel")) / 3, abs=1e-3)
    # claims are computed from the numbers, so they must agree with them
    c = rec["claims"]
    assert c["photo_easiest"]["holds"] == all(m["zero_shot"][d] < m["zero_shot"]["photo"]
                                              for d in ("sketch", "painting", "pixel"))
    assert c["full_probe_beats_zero_shot"]["holds"] == (m["linear_probe_full"]["photo"] > m["zero_shot"]["photo"])
    assert m["linear_probe"]["photo"] == pytest.approx(m["linear_probe_shots"]["8"], abs=1e-3)
    nb = json.loads(Path(out).read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert (Path(results.FIGURES) / "01_clip_zero_shot_prompts.png").exists()
