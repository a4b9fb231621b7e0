"""Service settings from the environment: defaults, every variable, bad values named."""

from __future__ import annotations

import pytest

from service.settings import Settings, default_front_workers


def test_defaults():
    s = Settings.from_env({})
    assert (s.max_batch, s.max_latency_ms, s.inference_workers, s.max_streams) == (
        64,
        1_000,
        1,
        64,
    )
    assert 1 <= s.front_workers == default_front_workers() <= 4
    assert s.classify_in == "auto" and s.untraced_paths == (
        "/classify",
        "/generate_stream",
        "/generation_channel",
    )


def test_every_variable_is_read():
    s = Settings.from_env(
        {
            "DLZOO_MODELS": "/m",
            "DLZOO_MAX_BATCH": "8",
            "DLZOO_FRONT_WORKERS": "3",
            "DLZOO_CLASSIFY_IN": " Inference ",
            "DLZOO_UNTRACED_PATHS": "/classify, /sample,",
            "DLZOO_CHANNEL_SECONDS": "2.5",
            "DLZOO_CONNECTION_SECONDS": "0",
        }
    )
    assert (str(s.models), s.max_batch, s.front_workers, s.classify_in) == ("/m", 8, 3, "inference")
    assert s.untraced_paths == ("/classify", "/sample") and s.channel_seconds == 2.5
    assert s.connection_seconds == 0.0 and Settings.from_env({}).connection_seconds == 2.0
    assert Settings.from_env({"DLZOO_UNTRACED_PATHS": ""}).untraced_paths == ()


@pytest.mark.parametrize(
    "env, named",
    [
        ({"DLZOO_CLASSIFY_IN": "gpu"}, "DLZOO_CLASSIFY_IN must be one of auto, front, inference"),
        ({"DLZOO_FRONT_WORKERS": "0"}, "DLZOO_FRONT_WORKERS must be an integer >= 1"),
        ({"DLZOO_MAX_BATCH": "many"}, "DLZOO_MAX_BATCH must be an integer"),
        ({"DLZOO_CHANNEL_SECONDS": "nan"}, "DLZOO_CHANNEL_SECONDS must be a number >= 0.1"),
        # one generation transport: a channel lives in the Inference worker that opened it
        (
            {"DLZOO_INFERENCE_WORKERS": "2"},
            "DLZOO_INFERENCE_WORKERS must be 1: a front worker's generation channel",
        ),
    ],
)
def test_bad_values_name_the_variable(env, named):
    with pytest.raises(ValueError, match=named):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "where, on_gpu, in_front",
    [
        ("auto", False, True),
        ("auto", True, False),  # the front on a CPU, one owner of a GPU
        ("front", True, True),
        ("front", False, True),
        ("inference", False, False),
        ("inference", True, False),
    ],
)
def test_where_classifiers_run(where, on_gpu, in_front):
    assert Settings.from_env({"DLZOO_CLASSIFY_IN": where}).classify_in_front(on_gpu) is in_front


def test_front_workers_follow_the_container_quota(monkeypatch):
    """A container's CPU quota caps the default (BentoML reads cgroups); the affinity mask and 4
    too."""
    from bentoml._internal.resource import CpuResource

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(CpuResource, "from_system", classmethod(lambda cls: 1.5))
    assert default_front_workers() == 1
    monkeypatch.setattr(CpuResource, "from_system", classmethod(lambda cls: 64.0))
    assert default_front_workers() == 4
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert default_front_workers() == 2

    def broken(cls):
        raise OSError("no cgroup files")

    monkeypatch.setattr(CpuResource, "from_system", classmethod(broken))
    assert default_front_workers() == 2
