"""`augserve bench augment --quick --json` runs and reports the two ratios."""

from __future__ import annotations

import json
import math

from augserve.server.cli import main


def test_bench_augment_quick_json(tmp_path, capsys):
    out = tmp_path / "augment.json"
    assert main(["bench", "augment", "--quick", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    figures, ratios = report["figures"], report["ratios"]
    assert set(ratios) == {"fast_vs_albumentations_per_core", "fast_vs_kornia_cpu"}
    assert figures["augserve_fast_images_per_s_per_core"] > 0
    assert math.isclose(ratios["fast_vs_albumentations_per_core"],
                        figures["augserve_fast_images_per_s_per_core"]
                        / figures["albumentations_images_per_s_per_core"])
    assert math.isclose(ratios["fast_vs_kornia_cpu"],
                        figures["augserve_fast_images_per_s_per_core"]
                        / figures["kornia_cpu_images_per_s_per_core"])
    assert (figures["batch"], figures["kornia_batch"], figures["rounds"]) == (24, 8, 3)  # quick
    met = ratios["fast_vs_albumentations_per_core"] >= 2.0
    assert report["targets_met"] == {"fast_vs_albumentations_per_core": met}
    assert "fast_vs_albumentations_per_core" in capsys.readouterr().out
