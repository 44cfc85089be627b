"""The settings page (docs/settings.md) documents every setting the stack reads, with the
default the stack really applies and each committed stack's own value (a setting added
without a row, or a default or a stack's value changed in one place only, is caught)."""

from __future__ import annotations

import re

import pytest
import yaml

from stack_settings import PROJECT_DIR, StackSettings

SETTINGS_PAGE = PROJECT_DIR / "docs" / "settings.md"
# The table's columns: key, what it does, default, allowed, then one per committed stack.
STACK_COLUMNS = {"dev": 4, "prod": 5}


def settings_rows() -> dict[str, list[str]]:
    page = SETTINGS_PAGE.read_text()
    section = re.search(r"<!-- section:settings -->(.*?)<!-- /section:settings -->", page, re.S)
    assert section is not None, f"{SETTINGS_PAGE.name} has no settings section"
    rows = {}
    for line in section.group(1).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    return rows


def shown(value: object) -> str:
    """A value as the table writes it: in backticks, booleans lowercase, empty as `""`."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f"`{text}`" if text else '`""`'


def test_every_setting_has_a_row_with_its_default() -> None:
    """Every key of Pulumi.yaml's schema and every field of the settings model is in the
    table, and the Default column is the schema's default."""
    schema = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    rows = settings_rows()
    model_keys = {info.alias for info in StackSettings.model_fields.values()}
    assert set(rows) == set(schema) | {"gcp:project"} == model_keys
    for key, entry in schema.items():
        assert rows[key][2] == shown(entry["default"]), key


@pytest.mark.parametrize("stack", sorted(STACK_COLUMNS))
def test_each_stack_column_is_that_stack_file(stack: str) -> None:
    """A stack's column shows the value its Pulumi.<stack>.yaml sets, and `(default)` for
    every key it leaves to Pulumi.yaml."""
    project = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["name"]
    config = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    values = {key.removeprefix(f"{project}:"): value for key, value in config.items()}
    column = STACK_COLUMNS[stack]
    for key, cells in settings_rows().items():
        expected = shown(values[key]) if key in values else "(default)"
        assert cells[column] == expected, f"{key} in the {stack} column"
