"""`augserve bench augment --quick --json` runs and reports the two ratios."""

from __future__ import annotations

import json

from augserve.server.cli import main


def test_bench_augment_quick_json(tmp_path, capsys):
    out = tmp_path / "augment.json"
    assert main(["bench", "augment", "--quick", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for key in ("fast_vs_albumentations_per_core", "fast_vs_kornia_cpu"):
        assert report["ratios"][key] > 0
    assert report["figures"]["augserve_fast_images_per_s_per_core"] > 0
    assert "fast_vs_albumentations_per_core" in capsys.readouterr().out
