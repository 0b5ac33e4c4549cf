"""ServerConfig: every field documented, flags and file merged, docs/configuration.md current."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from augserve.server.cli import build_parser
from augserve.server.config import TABLES, ServerConfig, config_from_args
from augserve.server.config_doc import REGENERATE, main, render
from augserve.server.options import help_of

ROOT = Path(__file__).resolve().parents[2]


def _all_fields():
    for f in dataclasses.fields(ServerConfig):
        yield "", f
        if f.name in TABLES:
            for sub in dataclasses.fields(TABLES[f.name]):
                yield f.name, sub


@pytest.mark.parametrize(("table", "field"), list(_all_fields()),
                         ids=lambda x: x if isinstance(x, str) else x.name)
def test_every_field_says_what_it_means(table, field):
    assert len(help_of(field)) > 10, f"{table}.{field.name} has no help"


def test_the_configuration_page_is_current():
    page = ROOT / "docs" / "configuration.md"
    assert page.read_text() == render(), f"docs/configuration.md is stale; run: {REGENERATE}"


def test_the_page_shows_every_field_and_flag():
    page = render()
    for table, f in _all_fields():
        assert f"`{table + '.' if table else ''}{f.name}`" in page
    for flag in ("--config", "--allow-import-prefix", "--inference-stream-window",
                 "--inference-max-replica-deaths", "--augment-max-ops", "--stream-window"):
        assert f"`{flag}" in page


def test_check_exits_nonzero_on_a_stale_page(tmp_path, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text(render().replace("256", "257"))
    assert main(["--check", str(stale)]) == 1
    assert REGENERATE in capsys.readouterr().err
    main(["--write", str(stale)])
    assert main(["--check", str(stale)]) == 0


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    config_file = tmp_path / "server.toml"
    config_file.write_text('port = 9001\nimport_prefixes = ["corp.models"]\n'
                           "[augment]\nmax_ops = 8\npool_size = 3\n"
                           "[inference]\nstream_window = 32\n")
    args = build_parser().parse_args([
        "serve", "--config", str(config_file), "--augment-pool-size", "0",
        "--inference-max-replica-deaths", "5", "--allow-import-prefix", "lab.nets",
        "--load-model", "a", "--load-model", "b", "--ready-file", str(tmp_path / "port"),
    ])
    config = config_from_args(args)
    assert config.port == 9001
    assert (config.augment.max_ops, config.augment.pool_size) == (8, 0)
    assert (config.inference.stream_window, config.inference.max_replica_deaths) == (32, 5)
    assert config.import_prefixes == ("lab.nets",)  # the flag replaces the file's list
    assert config.import_allow_list().prefixes == ("augserve", "torchvision.models", "lab.nets")
    assert config.load_models == ("a", "b")
    assert config.ready_file == tmp_path / "port"
    assert config.stream.window == 8


@pytest.mark.parametrize(("text", "words"), [
    ("[augment]\nmax_opz = 3\n", "unknown [augment] keys ['max_opz']"),
    ("colour = 1\n", "unknown config keys ['colour']"),
    ("[inference]\nstream_window = 0\n", "stream_window must be >= 1"),
    ('import_prefixes = ["not a module"]\n', "dotted module names"),
    ("max_inflight_per_client = 0\n", "max_inflight_per_client must be >= 1, got 0"),
    ("[inference]\nmax_tensor_elements = 0\n", "max_tensor_elements must be >= 1"),
    ("[inference]\nno_replica_wait_s = -1\n", "no_replica_wait_s must be >= 0"),
    ("[stream]\nmax_image_pixels = 0\n", "max_image_pixels must be >= 1"),
    ("[jobs]\nmax_queued = -1\n", "max_queued must be >= 0"),
])
def test_bad_config_values_are_named(tmp_path, text, words):
    config_file = tmp_path / "server.toml"
    config_file.write_text(text)
    with pytest.raises(ValueError, match=re.escape(words)):
        config_from_args(build_parser().parse_args(["serve", "--config", str(config_file)]))
