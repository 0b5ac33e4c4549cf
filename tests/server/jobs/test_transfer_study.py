"""`augserve transfer report`: the pairs, the JSON schema and the plot, from a reduced run."""

import json

import numpy as np
import pytest

from augserve.server.cli import main
from augserve.server.jobs.transfer_study import (
    KS,
    METHODS,
    PAIRS,
    StudySettings,
    blur,
    labelled,
    make_pair,
    study_table,
    transfer_study,
    write_study,
)

TINY = StudySettings(ks=(1, 2), seeds=2, steps=2, source_epochs=1, width=4, hidden=8, copies=1)


@pytest.fixture(scope="module")
def result():
    return transfer_study(TINY)


def test_the_defaults_are_the_issue_curve():
    settings = StudySettings()
    assert settings.ks == KS == (1, 2, 5, 10, 20) and settings.seeds >= 5
    assert set(METHODS) == {"scratch", "feature_extraction", "gap_transfer", "fc_transfer",
                            "full_finetune"}


def test_the_json_holds_every_pair_method_and_k_as_fractions(result, tmp_path):
    write_study(result, tmp_path / "t.json", tmp_path / "t.png")
    saved = json.loads((tmp_path / "t.json").read_text())
    assert set(saved["curves"]) == set(PAIRS) == {"new_classes", "new_domain"}
    for pair, methods in saved["curves"].items():
        assert set(methods) == set(METHODS), pair
        for method, cells in methods.items():
            assert list(cells) == ["1", "2"], (pair, method)
            for cell in cells.values():
                assert set(cell) == {"mean", "std", "seeds", "train_s", "cpu_s"}
                assert 0.0 <= cell["mean"] <= 1.0 and 0.0 <= cell["std"] <= 1.0
                assert cell["seeds"] == 2 and cell["train_s"] > 0
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "feature_extraction" in study_table(saved) and "± " in study_table(saved)
    assert "targets" not in saved  # the withdrawn "beats scratch by 10 points" target
    assert "top1_on_target_test" in saved["pairs"]["new_domain"]["source"]
    assert "top1_on_target_test" not in saved["pairs"]["new_classes"]["source"]


def test_the_pairs_keep_labelled_and_held_out_images_apart():
    for name in PAIRS:
        pair = make_pair(name)
        pool = {p.tobytes() for p in pair.pool_x}
        assert not any(t.tobytes() in pool for t in pair.test_x), name
        assert np.bincount(pair.pool_y).tolist() == [30] * pair.num_classes
        small, big = labelled(pair, 1, 3, 0), labelled(pair, 2, 3, 0)
        assert {x.tobytes() for x in small.train_x} <= {x.tobytes() for x in big.train_x}
    domain = make_pair("new_domain")
    assert domain.num_classes == 10 and make_pair("new_classes").num_classes == 5
    assert domain.test_x.max() < 0.95 < make_pair("new_classes").test_x.max()  # blurred


def test_blur_is_a_normalised_gaussian():
    point = np.zeros((1, 3, 9, 9), np.float32)
    point[0, :, 4, 4] = 1.0
    out = blur(point, 1.0)
    assert out.sum() == pytest.approx(3.0, rel=1e-5)
    assert out[0, 0, 4, 4] == pytest.approx(1 / (2 * np.pi), rel=0.05)
    np.testing.assert_allclose(out[0, 0], out[0, 0].T, atol=1e-7)


def test_the_command_writes_json_and_png(tmp_path, capsys):
    out = tmp_path / "curve.json"
    argv = ["transfer", "report", "--json", str(out), "--ks", "1", "--seeds", "1",
            "--steps", "1", "--source-epochs", "1"]
    assert main(argv) == 0
    assert set(json.loads(out.read_text())["curves"]["new_domain"]["scratch"]) == {"1"}
    assert (tmp_path / "transfer_report.png").is_file()
    assert "wrote" in capsys.readouterr().out
