"""Credit assignment and role datasets in SQL, on trees whose values are worked out by hand."""

from __future__ import annotations

import datasets
import pytest

from malt_lake.credit import (
    check_partition,
    compute_credit,
    role_datasets,
    validate_theta,
)
from malt_lake.errors import ConfigError
from malt_lake.names import PartitionKey
from tests.trees import WORKED, write_trees

KEY = PartitionKey("toy", "train", 0)
Q = "toy:q0"


@pytest.fixture
def worked(lake):
    write_trees(lake, KEY, {Q: WORKED})
    return lake


def values(table) -> dict[str, tuple]:
    return {r["node_id"]: (r["value"], r["label"], r["n_children"]) for r in table.to_pylist()}


def test_values_labels_and_missing_children_match_hand_computation(worked):
    credit = compute_credit(worked, KEY, 0.5)
    v = values(credit)
    assert credit.num_rows == 3 + 9 + 24  # the failed critique has no children
    g0, g1, g2 = (f"{Q}/g{i}" for i in range(3))
    assert v[g0] == (pytest.approx(2 / 3), True, 3)
    assert v[g1] == (pytest.approx(1 / 4), False, 2)   # the failed critique is left out
    assert v[g2] == (pytest.approx(1 / 3), False, 3)
    assert v[f"{g0}/v0"] == (pytest.approx(2 / 3), True, 3)
    assert v[f"{g0}/v1"] == (pytest.approx(1 / 3), False, 3)
    assert v[f"{g0}/v2"] == (1.0, True, 3)
    assert v[f"{g1}/v0"] == (0.5, False, 2)            # tie at theta is negative (strict >)
    assert v[f"{g1}/v2"] == (None, None, 0)            # failed critique: no value, no label
    assert v[f"{g1}/v0/r2"] == (None, None, 0)         # failed refinement
    assert v[f"{g0}/v0/r0"] == (1.0, True, 0)
    assert set(credit.column("theta").to_pylist()) == {0.5}
    parents = {r["node_id"]: r["parent_id"] for r in credit.to_pylist()}
    assert parents[g0] == Q and parents[f"{g0}/v1"] == g0 and parents[f"{g0}/v1/r2"] == f"{g0}/v1"


def test_theta_moves_labels_not_values(worked):
    low, high = compute_credit(worked, KEY, 0.3), compute_credit(worked, KEY, 0.7)
    lv, hv = values(low), values(high)
    g1v0, g2v2, g0 = f"{Q}/g1/v0", f"{Q}/g2/v2", f"{Q}/g0"
    assert lv[g1v0][1] is True and lv[g2v2][1] is True and lv[f"{Q}/g2"][1] is True
    assert hv[g0][1] is False and hv[f"{Q}/g0/v2"][1] is True
    assert {k: x[0] for k, x in lv.items()} == {k: x[0] for k, x in hv.items()}


def test_role_datasets_match_hand_counts(worked):
    write_credit(worked, 0.5)
    tables = role_datasets(worked, KEY)
    counts = {name: t.num_rows for name, t in tables.items()}
    assert counts == {"sft_generator": 1, "sft_verifier": 3, "sft_refiner": 10,
                      "dpo_generator": 2, "dpo_verifier": 4, "dpo_refiner": 9}
    pairs = {(r["pos_id"], r["neg_id"]) for r in tables["dpo_generator"].to_pylist()}
    assert pairs == {(f"{Q}/g0", f"{Q}/g1"), (f"{Q}/g0", f"{Q}/g2")}
    sft_v = sorted(r["node_id"] for r in tables["sft_verifier"].to_pylist())
    assert sft_v == [f"{Q}/g0/v0", f"{Q}/g0/v2", f"{Q}/g2/v1"]
    row = tables["dpo_refiner"].to_pylist()[0]
    assert row["prompt"] == [{"role": "user", "content": f"refine {row['parent_id']}"}]
    assert row["chosen"] == [{"role": "assistant", "content": f"final {row['pos_id']}"}]
    assert row["rejected"][0]["content"] == f"final {row['neg_id']}"


def write_credit(lake, theta: float) -> None:
    lake.write_partition("credit", KEY, compute_credit(lake, KEY, theta))


def write_roles(lake) -> None:
    for name, table in role_datasets(lake, KEY).items():
        lake.write_partition(name, KEY, table)


def test_role_datasets_load_with_hf_datasets_in_trl_format(worked, tmp_path):
    write_credit(worked, 0.5)
    write_roles(worked)
    sft = datasets.load_dataset("parquet", split="train", data_files=str(
        worked.partition_file("sft_refiner", KEY)), cache_dir=str(tmp_path / "hf"))
    assert len(sft) == 10 and {"prompt", "completion"} <= set(sft.column_names)
    assert sft[0]["completion"][0]["role"] == "assistant"
    dpo = datasets.load_dataset("parquet", split="train", data_files=str(
        worked.partition_file("dpo_verifier", KEY)), cache_dir=str(tmp_path / "hf"))
    assert len(dpo) == 4 and {"prompt", "chosen", "rejected"} <= set(dpo.column_names)


def test_contract_checks_pass_on_a_good_tree_and_catch_breakage(worked):
    write_credit(worked, 0.5)
    write_roles(worked)
    for check in ("tree_completeness", "credit_consistency"):
        assert check_partition(worked, KEY, check).num_rows == 0, check
    for role in ("generator", "verifier", "refiner"):
        assert check_partition(worked, KEY, "dpo_pairs", role).num_rows == 0, role
    # a verifier node with a missing (unrecorded) child breaks completeness
    refinements = worked.read_partition("refinements", KEY)
    worked.write_partition("refinements", KEY, refinements.slice(1))
    bad = check_partition(worked, KEY, "tree_completeness").to_pylist()
    assert bad == [{"node_id": f"{Q}/g0/v0", "role": "verifier", "n_children": 2,
                    "n_requested": 3}]
    # a label flipped by hand disagrees with theta; a swapped pair is caught
    credit = worked.read_partition("credit", KEY).to_pylist()
    flipped = next(i for i, r in enumerate(credit) if r["node_id"] == f"{Q}/g0")
    credit[flipped]["label"] = not credit[flipped]["label"]
    import pyarrow as pa

    from malt_lake.schemas import CREDIT
    worked.write_partition("credit", KEY, pa.Table.from_pylist(credit, schema=CREDIT))
    problems = check_partition(worked, KEY, "credit_consistency").to_pylist()
    assert problems == [{"node_id": f"{Q}/g0",
                         "problem": "label disagrees with value > theta"}]
    assert check_partition(worked, KEY, "dpo_pairs", "generator").num_rows >= 1


@pytest.mark.parametrize("theta", [0, 1, 1.5, -0.1, "abc", float("nan"), None, True])
def test_theta_outside_open_interval_is_refused(theta):
    with pytest.raises(ConfigError, match="theta must be"):
        validate_theta(theta)


def test_theta_accepts_numbers_and_numeric_strings():
    assert validate_theta(0.5) == 0.5 and validate_theta("0.7") == 0.7


def test_partitions_do_not_leak_into_each_other(worked):
    other = PartitionKey("toy", "train", 1)
    write_trees(worked, other, {"toy:q9": [[[0, 0]], [[1, 1]]]})
    credit = compute_credit(worked, KEY, 0.5)
    assert set(credit.column("shard").to_pylist()) == {"train.0000"}
    other_credit = compute_credit(worked, other, 0.5)
    assert values(other_credit)["toy:q9/g1"] == (1.0, True, 1)
