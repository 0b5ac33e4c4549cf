"""The name rule and `inside`: the one check every client-sent name and path goes through."""

from __future__ import annotations

import pytest

from augserve.server.errors import InvalidArgument
from augserve.server.paths import MAX_NAME_LENGTH, check_name, check_version, inside

ESCAPES = ["../x", "/etc/passwd", "a/../../b", "nul\x00byte", "x" * 10_000]


@pytest.mark.parametrize("name", ["digits", "resnet20_v2", "a.b-c", "9", "x" * MAX_NAME_LENGTH])
def test_valid_names(name):
    assert check_name(name, "model_name") == name


@pytest.mark.parametrize("name", [*ESCAPES, "", ".hidden", "-dash", "_under", "a b", "é",
                                  "x" * (MAX_NAME_LENGTH + 1), "a\n"], ids=repr)
def test_invalid_names_name_the_field_and_stay_short(name):
    with pytest.raises(InvalidArgument, match=r"^model_name: ") as error:
        check_name(name, "model_name")
    assert len(str(error.value)) < 300


@pytest.mark.parametrize("version", ["", "1", "42"])
def test_valid_versions(version):
    assert check_version(version, "model_version") == version


@pytest.mark.parametrize("version", ["-1", "1.0", "../1", "١", "9" * 19], ids=repr)
def test_invalid_versions(version):
    with pytest.raises(InvalidArgument, match=r"^model_version: "):
        check_version(version, "model_version")


def test_inside_accepts_paths_under_the_root_existing_or_not(tmp_path):
    (tmp_path / "m").mkdir()
    assert inside(tmp_path, "m", "config.json") == (tmp_path / "m" / "config.json").resolve()
    assert inside(tmp_path, "m/../m/new") == (tmp_path / "m" / "new").resolve()
    assert inside(tmp_path, str(tmp_path / "m")) == (tmp_path / "m").resolve()


@pytest.mark.parametrize("part", ESCAPES[:4], ids=repr)
def test_inside_refuses_escapes(tmp_path, part):
    with pytest.raises(InvalidArgument, match=r"^output_name: "):
        inside(tmp_path / "root", part, field="output_name")


def test_inside_follows_symlinks_out_and_refuses_them(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "out").symlink_to(outside)
    (root / "in").symlink_to(root)
    (root / "loop").symlink_to(root / "loop")
    assert inside(root, "in", "x") == (root / "x").resolve()
    for parts in (("out",), ("out", "file"), ("loop",)):
        with pytest.raises(InvalidArgument, match="path: "):
            inside(root, *parts)
