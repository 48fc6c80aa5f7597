"""docs/configuration.md lists every config key with its default, docs/commands.md every option of
every command: the pages cannot drift from the code."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from dlkdd.pipeline.config import Config

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def page_tables() -> dict[str, dict[str, str]]:
    """{section: {key: default as written}} from the page's `### ... [section] ...` tables; a heading
    that names several sections (the shared training schedule) gives its rows to each."""
    tables: dict[str, dict[str, str]] = {}
    sections: list[str] = []
    for line in PAGE.read_text().splitlines():
        if line.startswith("#"):
            sections = re.findall(r"`\[(\w+)\]`", line) if line.startswith("### ") else []
            continue
        row = re.match(r"^\| `(\w+)` \| `([^`]*)` \|", line)
        if row and sections:
            for s in sections:
                tables.setdefault(s, {})[row.group(1)] = row.group(2)
    return tables


def test_every_config_key_is_on_the_configuration_page_with_its_default():
    tables, cfg = page_tables(), Config()
    missing, wrong = [], []
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(getattr(cfg, section.name)):
            shown = tables.get(section.name, {}).get(f.name)
            if shown is None:
                missing.append(f"{section.name}.{f.name}")
                continue
            default = getattr(getattr(cfg, section.name), f.name)
            same = shown == json.dumps(default) or (
                isinstance(default, (int, float)) and not isinstance(default, bool) and float(shown) == default)
            if not same:
                wrong.append(f"{section.name}.{f.name}: the page says {shown}, the code {json.dumps(default)}")
    assert not missing, f"keys missing from {PAGE.name}: {missing}"
    assert not wrong, wrong


def test_the_commands_page_lists_every_option_as_help_states_it():
    from tests.docs_options import PAGE as COMMANDS
    from tests.docs_options import rewritten
    text = COMMANDS.read_text()
    assert rewritten(text) == text, "docs/commands.md is out of date: run python -m tests.docs_options"
