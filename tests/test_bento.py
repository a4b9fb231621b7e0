"""`bentoml build` packs the service with the serve requirements only: no torch in the Bento."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_bentoml_build_has_no_torch(tmp_path):
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "home"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    out = subprocess.run(
        [str(bin_dir / "bentoml"), "build", ".", "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    [bento] = [p for p in (tmp_path / "home" / "bentos" / "dlzoo").iterdir() if p.name != "latest"]
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime-gpu" in requirements and "bentoml" in requirements
    assert "torch" not in requirements.lower()
    sources = {
        p.relative_to(bento / "src").as_posix() for p in (bento / "src").rglob("*") if p.is_file()
    }
    assert {"service/app.py", "service/card.py", "models/README.md"} <= sources
    assert not any(s.startswith(("training/", "tests/")) for s in sources)
    meta = yaml.safe_load((bento / "bento.yaml").read_text())
    assert meta["service"] == "service.app:DLZoo"
