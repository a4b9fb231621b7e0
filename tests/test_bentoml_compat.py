"""service/bentoml_compat.py relies on BentoML internals: re-check it on a new version."""

from __future__ import annotations

import re
from pathlib import Path

import bentoml

from service.bentoml_compat import CHECKED_ON

ROOT = Path(__file__).resolve().parents[1]


def test_bentoml_is_a_version_the_workarounds_were_checked_on():
    assert bentoml.__version__ in CHECKED_ON, (
        f"BentoML {bentoml.__version__}: re-check each item of service/bentoml_compat.py against "
        f"its source, then add the version to CHECKED_ON (checked on {', '.join(CHECKED_ON)})"
    )


def test_the_pins_name_a_checked_version():
    for path in ("pyproject.toml", "bentofile.yaml"):
        pins = re.findall(r'"bentoml==([\d.]+)"', (ROOT / path).read_text())
        assert pins and set(pins) <= set(CHECKED_ON), (path, pins)
