"""README.md's configuration table is service/settings.py's list of variables, row for row."""

from __future__ import annotations

from pathlib import Path

from service.settings import VARIABLES

ROOT = Path(__file__).resolve().parents[1]


def table_rows() -> list[str]:
    return [f"| `{v.name}` | {v.default} | {v.meaning} |" for v in VARIABLES]


def test_readme_configuration_table_is_the_settings_list():
    readme = [
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("| `DLZOO_")
    ]
    assert readme == table_rows(), "README's table differs from service/settings.py VARIABLES"
