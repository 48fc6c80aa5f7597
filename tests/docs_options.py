"""The options table of docs/commands.md, generated from the click commands.

`python -m tests.docs_options` rewrites the block between the markers; tests/test_docs_config.py
fails when the page and the commands disagree.
"""
from __future__ import annotations

from pathlib import Path

import click

from dlkdd.cli import cli

PAGE = Path(__file__).resolve().parents[1] / "docs" / "commands.md"
BEGIN, END = "<!-- options:begin (generated: python -m tests.docs_options) -->", "<!-- options:end -->"


def _cell(text: str) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def options_table() -> str:
    """One row per option of every command (the global options first), as `--help` states them."""
    rows = ["| command | option | what it does |", "| --- | --- | --- |"]
    commands = [("dlkdd", cli)] + [(f"dlkdd {name}", cli.commands[name]) for name in sorted(cli.commands)]
    for label, command in commands:
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
                rows.append(f"| `{label}` | {names} | {_cell(param.help)} |")
    return "\n".join(rows)


def rewritten(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{options_table()}\n{END}{tail}"


if __name__ == "__main__":
    PAGE.write_text(rewritten(PAGE.read_text()))
