"""Changing theta re-runs credit and role datasets from the lake alone: no backend call, and
the partition's rows are replaced, not appended."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.definitions import ALL_ASSETS
from assets.partitions import shard_partitions
from assets.resources import BackendResource, TrainingResource
from malt_lake.query import run_read_only
from tests.resources import asset_resources

KEY = "arith.train.0000"
CHEAP = ["credit", "sft_generator", "sft_verifier", "sft_refiner", "dpo_generator",
         "dpo_verifier", "dpo_refiner"]


class TripwireBackend(BackendResource):
    """Fails the run if anything so much as builds a model."""

    def build(self):
        raise AssertionError("a backend was built during a theta rematerialization")


def mtimes(root) -> dict:
    return {p: p.stat().st_mtime_ns for t in ("generations", "critiques", "refinements",
                                              "leaf_rewards")
            for p in (root / "lake" / t).rglob("data.parquet")}


def test_theta_change_touches_only_cheap_assets(lake, instance):
    resources = asset_resources(lake)
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    assert KEY in instance.get_dynamic_partitions(shard_partitions.name)
    assert dg.materialize(ALL_ASSETS, selection=["questions", "generations", "critiques",
                                                 "refinements", "leaf_rewards", *CHEAP],
                          partition_key=KEY, instance=instance, resources=resources).success
    before = run_read_only(lake, "select role, count(*) n, sum(label::int) pos from credit "
                                 "group by all order by all").to_pylist()
    sizes_before = run_read_only(lake, "select * from pairs_per_role").to_pylist()
    untouched = mtimes(lake.root)

    tripwire = {**resources, "backend": TripwireBackend(kind="fake", model="fake"),
                 "training": TrainingResource()}
    for theta in (0.2, 0.5):
        result = dg.materialize(ALL_ASSETS, selection=CHEAP, partition_key=KEY,
                                instance=instance, resources=tripwire,
                                run_config={"ops": {"credit": {"config": {"theta": theta}}}})
        assert result.success
        after = run_read_only(lake, "select role, count(*) n, sum(label::int) pos, "
                                    "min(theta) t from credit group by all order by all"
                              ).to_pylist()
        assert [r["n"] for r in after] == [r["n"] for r in before]  # replaced, not appended
        assert {r["t"] for r in after} == {theta}
    assert mtimes(lake.root) == untouched  # expensive tables never rewritten
    # theta 0.5 again reproduces the first role datasets exactly
    assert run_read_only(lake, "select * from pairs_per_role").to_pylist() == sizes_before


@pytest.mark.parametrize("theta", [0.0, 1.0, 1.5, -0.2])
def test_theta_outside_interval_fails_the_run_with_a_clear_error(lake, instance, theta):
    resources = asset_resources(lake, backend=TripwireBackend(kind="fake", model="fake"))
    instance.add_dynamic_partitions(shard_partitions.name, [KEY])
    result = dg.materialize(ALL_ASSETS, selection=["credit"], partition_key=KEY,
                            instance=instance, resources=resources, raise_on_error=False,
                            run_config={"ops": {"credit": {"config": {"theta": theta}}}})
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "theta must be strictly between 0 and 1" in str(failure.step_failure_data.error)
