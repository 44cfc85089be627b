"""The README's settings table documents every setting the stack reads, with the default
the stack really applies (a setting added without a row, or a default changed in one
place only, is caught)."""

from __future__ import annotations

import re

import yaml

from stack_settings import PROJECT_DIR, StackSettings


def settings_rows() -> dict[str, list[str]]:
    readme = (PROJECT_DIR / "README.md").read_text()
    section = re.search(r"<!-- section:settings -->(.*?)<!-- /section:settings -->", readme, re.S)
    assert section is not None, "README has no settings section"
    rows = {}
    for line in section.group(1).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    return rows


def test_every_setting_has_a_row_with_its_default() -> None:
    """Every key of Pulumi.yaml's schema and every field of the settings model is in the
    table, and the Default column is the schema's default."""
    schema = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    rows = settings_rows()
    model_keys = {info.alias for info in StackSettings.model_fields.values()}
    assert set(rows) == set(schema) | {"gcp:project"} == model_keys
    for key, entry in schema.items():
        default = entry["default"]
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert rows[key][2] == (f"`{shown}`" if shown else '`""`'), key
