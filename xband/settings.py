"""Run settings, each declared once: a dataclass field with its default, its help, and how the
command line spells it, as `xband.methods._base.option` declares a method's options.

`RunConfig` (and `RayEngine`) declare their fields with `setting`; the command line builds its
options from those fields (`xband.cli.options.add_settings`), and a test checks that
`xband.explain`'s signature and docstring follow them. Help texts name other settings with
`xband.errors.option`, so the library says `all_images=True` where the command line says
`--all-images`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from xband.errors import spelled

# the groups `xband explain --help` shows the settings in
DATA, EXPLAIN, RUN, ENGINE = ("data and bands", "what to explain", "run",
                              'engine (past one machine: Ray; pip install -e ".[ray]")')


def setting(default: Any, help: str, *, group: str = EXPLAIN,  # noqa: A002 - argparse's name
            flag: str | None = None, kind: type | None = None, choices: tuple | None = None,
            metavar: str | None = None, cli: bool = True) -> Any:
    """A run setting as a dataclass field: `default`, and `help` (with `option(...)` spellings)
    for both the library and the command line, where it is `flag` (default: --name-with-dashes)
    in `group`, parsed as `kind` (a bool is a switch; a flag starting --no- or --un- turns the
    setting off) among `choices`. `cli` False: a library-only setting."""
    return dataclasses.field(default=default, metadata={
        "help": help, "group": group, "flag": flag, "kind": kind, "choices": choices,
        "metavar": metavar, "cli": cli})


def settings_of(cls: type) -> list[dataclasses.Field]:
    """The fields of `cls` declared with `setting`, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def flag_of(field: dataclasses.Field) -> str:
    """How the command line spells a setting."""
    return field.metadata["flag"] or "--" + field.name.replace("_", "-")


def help_of(field: dataclasses.Field, *, cli: bool) -> str:
    """A setting's help as the library (`cli` False) or the command line says it."""
    return spelled(field.metadata["help"], cli=cli)


def settings_doc(cls: type, *, indent: int) -> str:
    """The settings of `cls` as the lines of a Google-style Args section, as the library says
    them (each declared once: `setting`)."""
    lines = []
    for field in settings_of(cls):
        words = f"{field.name}: {help_of(field, cli=False)} (default {field.default!r}).".split()
        line = " " * indent + words[0]
        for word in words[1:]:
            if len(line) + 1 + len(word) > 96:
                lines.append(line)
                line = " " * (indent + 4) + word
            else:
                line += " " + word
        lines.append(line)
    return "\n".join(lines) + "\n"
