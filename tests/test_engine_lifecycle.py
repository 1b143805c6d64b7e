"""One inference engine per run: G, V and R share it; it is released before training in the
same run and closed when the run ends."""

from __future__ import annotations

import dagster as dg

from assets.definitions import ALL_ASSETS
from assets.resources import BackendResource
from malt_lake.backends.fake import FakeBackend
from tests.resources import asset_resources

EVENTS: list[str] = []
KEY = "arith.train.0000"


class RecordedFake(FakeBackend):
    def close(self) -> None:
        EVENTS.append("close")


class RecordingBackend(BackendResource):
    """The fake backend, recording every engine start and close."""

    def build(self):
        EVENTS.append("build")
        return RecordedFake()


def test_g_v_r_share_one_engine_per_run_and_it_is_closed_at_the_end(lake, instance):
    resources = {**asset_resources(lake), "backend": RecordingBackend(kind="fake", model="fake")}
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    EVENTS.clear()
    assert dg.materialize(ALL_ASSETS, selection=["questions", "generations", "critiques",
                                                 "refinements"], partition_key=KEY,
                          instance=instance, resources=resources).success
    assert EVENTS == ["build", "close"]


def test_an_evaluation_run_builds_one_engine_and_closes_it(lake, instance):
    resources = {**asset_resources(lake), "backend": RecordingBackend(kind="fake", model="fake")}
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    for key in instance.get_dynamic_partitions("shards"):
        assert dg.materialize(ALL_ASSETS, selection=["questions"], partition_key=key,
                              instance=instance, resources=resources).success
    EVENTS.clear()
    # the adapter asset runs first (it holds no engine: nothing to release), evaluation then
    # builds the run's engine and the end of the run closes it
    result = dg.materialize(ALL_ASSETS, selection=["generator_adapter", "evaluation"],
                            partition_key="arith", instance=instance, resources=resources,
                            run_config={"ops": {"evaluation": {"config": {
                                "seeds": 1, "limit": 2}}}})
    assert result.success
    assert EVENTS == ["build", "close"]


def test_release_closes_a_held_engine_and_the_next_use_builds_again():
    EVENTS.clear()
    backend = RecordingBackend(kind="fake", model="fake")
    first = backend.engine()
    assert backend.engine() is first and EVENTS == ["build"]
    backend.release()
    assert EVENTS == ["build", "close"]
    assert backend.engine() is not first and EVENTS == ["build", "close", "build"]
    backend.release()
    backend.release()  # nothing held: nothing to close
    assert EVENTS == ["build", "close", "build", "close"]

