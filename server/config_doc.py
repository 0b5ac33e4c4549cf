"""Render `docs/configuration.md` from the code: `ServerConfig`'s fields and `serve`'s flags.

Every field's meaning is its `option(help=...)`, the same text `augserve serve --help`
prints, so the page and the help cannot disagree. A test compares the page with
`render()`; after changing a field or a flag, regenerate the page with

    python -m augserve.server.config_doc --write docs/configuration.md

(`python -m augserve.server.config_doc` alone prints it; `--check FILE` exits 1 when
FILE is stale).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from augserve.server.config import TABLES, ServerConfig, add_serve_arguments
from augserve.server.options import flag_of, help_of, shown_default

PAGE = "docs/configuration.md"
REGENERATE = f"python -m augserve.server.config_doc --write {PAGE}"

_INTRO = f"""\
# Configuration

<!-- Generated from augserve.server.config by `{REGENERATE}`; do not edit by hand. -->

`augserve serve` reads its configuration from three places, each overriding the one
before: the built-in defaults below, a TOML file given with `--config FILE`, and the
command-line flags. Every limit the server enforces is one of these fields; they are
checked once at start-up, and a bad value stops the server with a message naming it.

The top-level keys of the file are the fields of `ServerConfig`; each service has a
table of its own (`[inference]`, `[augment]`, `[stream]`, `[jobs]`). For example:

```toml
port = 9001
import_prefixes = ["mycompany.models"]

[augment]
pool_size = 4
max_images = 256

[stream]
window = 16

[stream.datasets.train]
kind = "folder"
path = "/data/train"
```

is the same as `augserve serve --port 9001 --allow-import-prefix mycompany.models
--augment-pool-size 4 --augment-max-images 256 --stream-window 16` plus the dataset,
which only the file can declare.
"""

_TABLE_NOTES = {
    "inference": "Server-wide limits of model serving; a model's own batching knobs live in "
                 "its `config.toml` in the model repository.",
    "augment": "The Augment RPC: request limits, the actor pool and registered pipelines.",
    "stream": "The StreamBatches RPC: per-stream window, limits, the worker pool, "
              "shared-memory rings and datasets.",
    "jobs": "The Jobs service (compress and transfer jobs run as Ray tasks).",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _fields_table(cls: type, table: str | None) -> list[str]:
    rows = ["| Key | Type | Default | Flag | Meaning |", "| --- | --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        if table is None and f.name in TABLES:
            default = f"`[{f.name}]` table"
        else:
            default = _code(shown_default(f))
        key = f"{table}.{f.name}" if table else f.name
        rows.append(f"| `{key}` | {_cell(_code(str(f.type)))} | {_cell(default)} | "
                    f"{_code(flag_of(f) or '')} | {_cell(help_of(f))} |")
    return rows


def _flags_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| Flag | Sets | Meaning |", "| --- | --- | --- |"]
    for action in parser._actions:  # argparse keeps no public list of its actions
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        flag = "`" + ", ".join(action.option_strings)
        if action.choices:
            flag += " {" + ",".join(map(str, action.choices)) + "}"
        elif action.nargs != 0:
            flag += f" {action.metavar or 'VALUE'}"
        table, _, key = action.dest.partition("_")
        sets = f"`{table}.{key}`" if table in TABLES else f"`{action.dest}`"
        if action.dest == "config":
            sets = "(reads the file)"
        rows.append(f"| {_cell(flag)}` | {sets} | {_cell(str(action.help or ''))} |")
    return rows


def serve_parser() -> argparse.ArgumentParser:
    """The parser of `augserve serve`, as the console script builds it."""
    parser = argparse.ArgumentParser(prog="augserve serve")
    add_serve_arguments(parser)
    return parser


def render() -> str:
    """The whole page, as Markdown."""
    lines = [_INTRO, "## Top level", "",
             "The fields of `augserve.server.config.ServerConfig`.", ""]
    lines += _fields_table(ServerConfig, None)
    for table, cls in TABLES.items():
        lines += ["", f"## `[{table}]`", "",
                  f"{_TABLE_NOTES[table]} The fields of `{cls.__module__}.{cls.__name__}`.", ""]
        lines += _fields_table(cls, table)
    lines += ["", "## `augserve serve` flags", "",
              "Each flag overrides the key it sets; a flag given more than once (`--load-model`, "
              "`--allow-import-prefix`) adds one item each time.", ""]
    lines += _flags_table(serve_parser())
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the page, `--write` it to a file, or `--check` a file against it."""
    parser = argparse.ArgumentParser(prog="python -m augserve.server.config_doc",
                                     description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="FILE", help="write the page to FILE")
    group.add_argument("--check", type=Path, metavar="FILE",
                       help="exit 1 if FILE differs from the rendered page")
    args = parser.parse_args(argv)
    page = render()
    if args.write:
        args.write.write_text(page)
    elif args.check:
        current = args.check.read_text() if args.check.exists() else ""
        if current != page:
            print(f"{args.check} is stale; regenerate it with: {REGENERATE}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
