"""Changing theta re-runs credit and role datasets from the lake alone: no backend call, and
the partition's rows are replaced, not appended."""

from __future__ import annotations

from collections import defaultdict

import dagster as dg
import pytest

from assets.definitions import ALL_ASSETS
from assets.partitions import shard_partitions
from assets.resources import BackendResource, TrainingResource
from malt_lake.lake import Lake
from malt_lake.query import run_read_only
from tests.resources import asset_resources

KEY = "arith.train.0000"
CHEAP = ["credit", "sft_generator", "sft_verifier", "sft_refiner", "dpo_generator",
         "dpo_verifier", "dpo_refiner"]
ROLES = ("generator", "verifier", "refiner")
# 1/3 is exactly the value of a critique with one right refinement of three: at that theta a
# label written as `value >= theta` differs from MALT's strict `value > theta`
THETAS = (0.2, 1 / 3, 0.5)


class TripwireBackend(BackendResource):
    """Fails the run if anything so much as builds a model."""

    def build(self):
        raise AssertionError("a backend was built during a theta rematerialization")


def versions(lake: Lake) -> dict[str, int | None]:
    """The Delta version of each expensive table: a rewrite would add one."""
    return {t: lake.version(t) for t in ("generations", "critiques", "refinements",
                                         "leaf_rewards")}


def recomputed_values(lake: Lake) -> dict[str, dict[str, float]]:
    """MALT's node values recomputed in Python from the stored rewards alone (not from the
    credit SQL): a refinement's reward, a critique's mean over its refinements, an answer's
    mean over its critiques' values; a failed sample (null reward) is left out."""
    rows = run_read_only(lake, "select g_id, v_id, r_id, reward from leaf_rewards "
                               "where reward is not null").to_pylist()
    by_critique: dict[str, list[float]] = defaultdict(list)
    parent: dict[str, str] = {}
    for row in rows:
        by_critique[row["v_id"]].append(float(row["reward"]))
        parent[row["v_id"]] = row["g_id"]
    verifier = {v: sum(xs) / len(xs) for v, xs in by_critique.items()}
    by_answer: dict[str, list[float]] = defaultdict(list)
    for v, value in verifier.items():
        by_answer[parent[v]].append(value)
    return {"refiner": {row["r_id"]: float(row["reward"]) for row in rows},
            "verifier": verifier,
            "generator": {g: sum(xs) / len(xs) for g, xs in by_answer.items()}}


def stored_values(lake: Lake) -> dict[str, dict[str, float]]:
    rows = run_read_only(lake, "select role, node_id, value from credit "
                               "where value is not null").to_pylist()
    out: dict[str, dict[str, float]] = {role: {} for role in ROLES}
    for row in rows:
        out[row["role"]][row["node_id"]] = row["value"]
    return out


def positives(lake: Lake) -> dict[str, int]:
    """Positive labels per role, as the credit asset wrote them."""
    rows = run_read_only(lake, "select role, sum(label::int)::bigint pos from credit group by all"
                         ).to_pylist()
    return {r["role"]: r["pos"] for r in rows}


def expected_positives(values: dict[str, dict[str, float]], theta: float) -> dict[str, int]:
    return {role: sum(v > theta for v in values[role].values()) for role in ROLES}


def test_theta_change_touches_only_cheap_assets(lake, instance):
    resources = asset_resources(lake)
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    assert KEY in instance.get_dynamic_partitions(shard_partitions.name)
    assert dg.materialize(ALL_ASSETS, selection=["questions", "generations", "critiques",
                                                 "refinements", "leaf_rewards", *CHEAP],
                          partition_key=KEY, instance=instance, resources=resources).success
    before = run_read_only(lake, "select role, count(*) n from credit group by all "
                                 "order by all").to_pylist()
    first_positives = positives(lake)  # at the default theta, 0.5
    sizes_before = run_read_only(lake, "select * from pairs_per_role").to_pylist()
    untouched = versions(lake)
    first_credit_version = lake.version("credit")
    values = recomputed_values(lake)
    stored = stored_values(lake)
    for role in ROLES:  # same nodes, same values as the credit SQL wrote
        assert stored[role] == pytest.approx(values[role], abs=1e-12), role
    assert any(v == 1 / 3 for v in values["verifier"].values())  # the tie at 1/3 is exercised
    # the thetas can be told apart: some node's value lies in (0.2, 0.5]
    movable = {role for role in ROLES if any(0.2 < v <= 0.5 for v in values[role].values())}
    assert movable

    tripwire = {**resources, "backend": TripwireBackend(kind="fake", model="fake"),
                 "training": TrainingResource()}
    by_theta = {}
    for theta in THETAS:
        result = dg.materialize(ALL_ASSETS, selection=CHEAP, partition_key=KEY,
                                instance=instance, resources=tripwire,
                                run_config={"ops": {"credit": {"config": {"theta": theta}}}})
        assert result.success
        after = run_read_only(lake, "select role, count(*) n, min(theta) t, max(theta) t_max "
                                    "from credit group by all order by all").to_pylist()
        assert [(r["role"], r["n"]) for r in after] == [(r["role"], r["n"]) for r in before]
        assert {r["t"] for r in after} == {r["t_max"] for r in after} == {theta}
        by_theta[theta] = positives(lake)
        assert by_theta[theta] == expected_positives(values, theta), theta
    assert versions(lake) == untouched  # expensive tables never rewritten
    low, high = by_theta[0.2], by_theta[0.5]
    assert all(low[role] >= high[role] for role in ROLES)
    assert {role for role in ROLES if low[role] > high[role]} == movable
    # theta 0.5 again reproduces the first labels and role datasets exactly
    assert high == first_positives
    assert run_read_only(lake, "select * from pairs_per_role").to_pylist() == sizes_before
    # time travel: each theta is a credit version, listed with its theta, readable beside
    # the current labels
    listed = run_read_only(lake, "select version, theta from lake_versions where table_name = "
                                 "'credit' and operation = 'WRITE' order by version").to_pylist()
    assert [r["theta"] for r in listed] == [0.5, *THETAS]
    assert listed[0]["version"] == first_credit_version
    at_low = listed[1]["version"]  # the theta 0.2 materialization
    compared = run_read_only(lake, f"""
        select c.role, sum(old.label::int)::bigint old_pos, sum(c.label::int)::bigint pos,
               count(*) filter (where old.label and not c.label) flipped
        from credit c join credit_v{at_low} old using (node_id)
        group by all order by all""", as_of={"credit": at_low}).to_pylist()
    assert {r["role"]: r["old_pos"] for r in compared} == low
    assert {r["role"]: r["pos"] for r in compared} == high
    assert {r["role"]: r["flipped"] for r in compared} == {
        role: low[role] - high[role] for role in ROLES}


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
