"""The live model repository as plain objects (no HTTP): scans, the version policy, failures that
never replace a serving version, draining and freeing. Versions are published as a user would:
copied into a dot folder, then renamed into place."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from service.repository import Catalog, VersionPolicy
from service.runtime import RuntimeConfig

CPU = RuntimeConfig(device="cpu")


def publish(src: Path, root: Path, name: str, version: int, corrupt: bool = False) -> Path:
    """Copy a version folder into ``root`` as ``name@version`` (a dot folder, renamed)."""
    tmp = root / f".tmp-{name}-{version}"
    shutil.copytree(src, tmp)
    card = json.loads((tmp / "card.json").read_text())
    card.update(name=name, version=version)
    (tmp / "card.json").write_text(json.dumps(card))
    if corrupt:
        with open(tmp / "model.onnx", "ab") as f:
            f.write(b"\0")
    (root / name).mkdir(exist_ok=True)
    dest = root / name / str(version)
    os.rename(tmp, dest)
    return dest


@pytest.fixture()
def repo(model_repo, tmp_path) -> tuple[Path, Path]:
    """A repository with lenet5@1 only, and the folder to copy new versions from."""
    src = model_repo / "lenet5" / "1"
    root = tmp_path / "models"
    root.mkdir()
    publish(src, root, "lenet5", 1)
    return root, src


def states(catalog: Catalog) -> dict[str, str]:
    return {e.ref: e.status for e in catalog.entries}


def test_an_unchanged_repository_changes_nothing_and_a_new_version_takes_over(repo):
    root, src = repo
    catalog = Catalog(root, CPU)
    first = catalog.resolve("lenet5")
    assert catalog.scan() == [] and catalog.resolve("lenet5") is first  # no reload, same sessions
    publish(src, root, "lenet5", 2)
    assert catalog.scan() == ["lenet5@2 ready"]
    assert catalog.resolve("lenet5").version == 2 and catalog.resolve("lenet5@1") is first


def test_policy_counts_verified_versions_and_a_broken_one_evicts_nothing(repo):
    root, src = repo
    publish(src, root, "lenet5", 2)
    catalog = Catalog(root, CPU, policy=VersionPolicy.parse("latest:1"))
    assert states(catalog) == {"lenet5@1": "unloaded", "lenet5@2": "ready"}
    publish(src, root, "lenet5", 3, corrupt=True)
    catalog.scan()
    assert states(catalog)["lenet5@3"] == "failed" and catalog.resolve("lenet5").version == 2
    with pytest.raises(Exception, match="loaded versions: 2"):
        catalog.resolve("lenet5@1")  # pinned outside the policy: 404 naming what is loaded
    failed_once = catalog.versions[("lenet5", 3)]
    catalog.scan()
    assert catalog.versions[("lenet5", 3)] is failed_once  # not retried: its files did not change


def test_a_version_copied_file_by_file_is_never_served_half_written(repo):
    root, src = repo
    catalog = Catalog(root, CPU)
    dest = root / "lenet5" / "2"
    dest.mkdir()
    shutil.copy(src / "card.json", dest / "card.json")  # card first, the graph not yet
    card = json.loads((dest / "card.json").read_text())
    (dest / "card.json").write_text(json.dumps({**card, "version": 2}))
    catalog.scan()
    assert states(catalog)["lenet5@2"] == "failed" and catalog.resolve("lenet5").version == 1
    half = (src / "model.onnx").read_bytes()
    (dest / "model.onnx").write_bytes(half[: len(half) // 2])
    catalog.scan()
    assert states(catalog)["lenet5@2"] == "failed" and catalog.resolve("lenet5").version == 1
    (dest / "model.onnx").write_bytes(half)  # the copy completes: its files changed, retried
    catalog.scan()
    assert catalog.resolve("lenet5").version == 2


def test_deleting_the_newest_drains_it_then_frees_it_and_the_previous_serves(repo):
    root, src = repo
    publish(src, root, "lenet5", 2)
    catalog = Catalog(root, CPU, grace=0.2)
    newest = catalog.resolve("lenet5")
    with catalog.hold(newest):
        shutil.rmtree(root / "lenet5" / "2")
        catalog.scan()
        assert newest.status == "draining" and newest.sessions  # still answering its request
        assert catalog.resolve("lenet5").version == 1  # no gap: the previous one serves
        time.sleep(0.3)
        catalog.scan()
        assert newest.sessions  # held: never freed under a request
    time.sleep(0.3)
    catalog.scan()
    assert not newest.sessions and "lenet5@2" not in states(catalog)


def test_files_changed_under_a_serving_version_that_fail_keep_the_verified_copy(repo):
    root, _ = repo
    catalog = Catalog(root, CPU)
    serving = catalog.resolve("lenet5")
    with open(root / "lenet5" / "1" / "model.onnx", "ab") as f:
        f.write(b"\0")
    catalog.scan()
    assert catalog.resolve("lenet5") is serving and "still serving" in serving.reason


def test_a_missing_or_empty_root_unloads_nothing(repo):
    root, _ = repo
    catalog = Catalog(root, CPU)
    away = root.with_name("away")
    os.rename(root, away)
    assert catalog.scan() == [] and states(catalog) == {"lenet5@1": "ready"}
    os.rename(away, root)
    shutil.move(str(root / "lenet5"), str(away))  # an empty listing: a storage glitch
    assert catalog.scan() == [] and states(catalog) == {"lenet5@1": "ready"}


def test_a_process_that_adopts_follows_the_runner_and_never_picks_what_it_has_not_loaded(repo):
    root, src = repo
    runner = Catalog(root, CPU, tasks=["classify"])
    follower = Catalog(root, None, adopts=True)
    assert states(follower) == {"lenet5@1": "loading"}  # until the runner says
    follower.adopt(runner.summary())
    assert follower.resolve("lenet5").version == 1
    publish(src, root, "lenet5", 2)
    follower.scan()  # the follower sees the folder before the runner has loaded it
    follower.adopt(runner.summary())
    assert states(follower)["lenet5@2"] == "loading" and follower.resolve("lenet5").version == 1
    runner.scan()
    follower.adopt(runner.summary())
    assert follower.resolve("lenet5").version == 2


def test_version_policy_parsing():
    assert VersionPolicy.parse("latest:3").latest == 3 and VersionPolicy.parse("ALL").latest is None
    for bad in ("latest:0", "latest", "newest:2", "3"):
        with pytest.raises(ValueError, match="latest:N"):
            VersionPolicy.parse(bad)
