"""MkDocs hook: the command-line reference, written from `xband.cli.main.build_parser()` at build
time, so that the page lists every subcommand and option the `xband` command has, no more.

A page holding the line `<!-- xband-cli-reference -->` gets it in that line's place; the build
fails when no page asks for it, since the reference would then be missing without a warning.
"""

from __future__ import annotations

import argparse

MARKER = "<!-- xband-cli-reference -->"
_found = False


def on_pre_build(config) -> None:
    global _found
    _found = False


def on_page_markdown(markdown: str, page, config, files) -> str:
    global _found
    if MARKER not in markdown:
        return markdown
    from xband.cli.main import build_parser

    _found = True
    return markdown.replace(MARKER, cli_reference(build_parser()))


def on_post_build(config) -> None:
    if not _found:
        raise RuntimeError(f"no page holds {MARKER}: the command-line reference was not written")


def cli_reference(parser: argparse.ArgumentParser) -> str:
    """Markdown for every subcommand of `parser`: what it does, its usage, and a table of its
    options per group, with the help text argparse would print."""
    sections = [parser.description or ""]
    for name, command in _subcommands(parser).items():
        sections.append(f"## `xband {name}`\n")
        if command.description:
            sections.append(command.description + "\n")
        sections.append("```text\n" + command.format_usage().strip() + "\n```\n")
        for group in command._action_groups:
            rows = [_row(command, action) for action in group._group_actions
                    if action.help != argparse.SUPPRESS
                    and not isinstance(action, argparse._HelpAction)]
            if rows:
                sections.append(f"**{group.title}**\n\n| option | what it does |\n|---|---|\n"
                                + "\n".join(rows) + "\n")
        if command.epilog:
            sections.append("```text\n" + command.epilog.strip() + "\n```\n")
    return "\n".join(sections)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise RuntimeError("the xband parser has no subcommands")


def _row(command: argparse.ArgumentParser, action: argparse.Action) -> str:
    """One option as a table row: its spellings with the value it takes, and its help."""
    formatter = command._get_formatter()
    spelled = ", ".join(action.option_strings) or action.dest
    if action.option_strings and action.nargs != 0:
        spelled += " " + formatter._format_args(action, action.dest.upper())
    required = " (required)" if action.required and action.option_strings else ""
    text = formatter._expand_help(action) if action.help else ""
    return f"| `{spelled}` | {_cell(text)}{required} |"


def _cell(text: str) -> str:
    """Help text as one line of a Markdown table cell (a pipe would end the cell)."""
    return " ".join(text.split()).replace("|", "\\|")
