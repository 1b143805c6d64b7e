"""Credit assignment and role datasets in SQL, on trees whose values are worked out by hand."""

from __future__ import annotations

import random
from pathlib import Path

import datasets
import polars as pl
import pyarrow as pa
import pytest

from malt_lake import schemas
from malt_lake.credit import (
    check_partition,
    compute_credit,
    role_dataset_drops,
    role_datasets,
    validate_theta,
)
from malt_lake.errors import ConfigError, LakeError
from malt_lake.export import export_table
from malt_lake.names import PartitionKey
from malt_lake.query import connect, run_read_only
from tests.trees import WORKED, write_trees

KEY = PartitionKey("toy", "train", 0)
# the credit statement's earlier group-by form, kept as the benchmark's baseline
GROUPBY_SQL = Path(__file__).resolve().parents[1] / "bench" / "sql" / "credit_groupby.sql"
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
    write_roles(worked)  # a second version: a glob over the table's files would read both
    sft_file, _ = export_table(worked, "sft_refiner", tmp_path / "sft_refiner.jsonl")
    sft = datasets.load_dataset("json", split="train", data_files=str(sft_file),
                                cache_dir=str(tmp_path / "hf"))
    assert len(sft) == 10 and {"prompt", "completion"} <= set(sft.column_names)
    assert sft[0]["completion"][0]["role"] == "assistant"
    dpo_file, _ = export_table(worked, "dpo_verifier", tmp_path / "dpo_verifier.parquet")
    dpo = datasets.load_dataset("parquet", split="train", data_files=str(dpo_file),
                                cache_dir=str(tmp_path / "hf"))
    assert len(dpo) == 4 and {"prompt", "chosen", "rejected"} <= set(dpo.column_names)
    # polars reads the Delta table itself, at its latest version or an earlier one
    assert pl.scan_delta(worked.table_uri("sft_refiner")).select(pl.len()).collect().item() == 10
    assert pl.read_delta(worked.table_uri("sft_refiner"), version=1).height == 10
    assert len(list(worked.table_dir("sft_refiner").rglob("*.parquet"))) == 2  # both versions


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


def test_a_generation_without_critiques_is_a_node_without_value(lake):
    write_trees(lake, KEY, {Q: [[[1, 0]], [], [[None], "failed"]]})
    v = values(compute_credit(lake, KEY, 0.5))
    assert v[f"{Q}/g0"] == (0.5, False, 1)
    assert v[f"{Q}/g1"] == (None, None, 0)             # no critique at all
    assert v[f"{Q}/g2"] == (None, None, 0)             # only failed children below it
    assert v[f"{Q}/g2/v0"] == (None, None, 0) and v[f"{Q}/g2/v1"] == (None, None, 0)


def test_leaf_rewards_with_a_null_r_idx_are_named(worked):
    table = worked.read_required("leaf_rewards", KEY)
    index = table.schema.get_field_index("r_idx")
    nulls = pa.array([None, *table.column("r_idx").to_pylist()[1:]], pa.int64())
    worked.write_partition("leaf_rewards", KEY, table.set_column(index, "r_idx", nulls))
    with pytest.raises(LakeError, match="1 row\\(s\\) without r_idx"):
        compute_credit(worked, KEY, 0.5)


def random_trees(seed: int, questions: int) -> dict:
    """Trees of uneven shape: 0-3 generations, 0-3 critiques (some failed), 1-4 leaves each
    (some failed)."""
    rng = random.Random(seed)
    leaf = [1, 0, 0, None]
    return {f"toy:r{q}": [[("failed" if rng.random() < 0.1 else
                            [rng.choice(leaf) for _ in range(rng.randint(1, 4))])
                           for _ in range(rng.randint(0, 3))]
                          for _ in range(rng.randint(0, 3))]
            for q in range(questions)}


def test_window_statement_equals_the_group_by_statement_on_uneven_trees(lake):
    write_trees(lake, KEY, random_trees(7, 60))
    window = compute_credit(lake, KEY, 0.5)
    con = connect(lake, derived=False, tables=("generations", "critiques", "leaf_rewards"))
    try:
        groupby = con.sql(GROUPBY_SQL.read_text(), params={
            "dataset": KEY.dataset, "shard": KEY.shard, "theta": 0.5}).to_arrow_table()
    finally:
        con.close()
    assert window.schema == groupby.schema
    rows = [sorted(t.to_pylist(), key=lambda r: r["node_id"]) for t in (window, groupby)]
    assert len(rows[0]) == len(rows[1]) > 300
    for got, want in zip(*rows, strict=True):
        assert got == {**want, "value": pytest.approx(want["value"])}
    assert {r["role"] for r in rows[0] if r["value"] is None} == {"generator", "verifier",
                                                                   "refiner"}

# A partition where siblings repeat each other's text (tests/trees.py gives every node its own
# text; the duplicates are written over it). At theta 0.5:
#   g0 (value 1/2, negative) and g1 (1, positive) share a text;
#   g0/v0 (2/3, positive) and g0/v1 (1/3, negative) share a text; g0/v2 is 1/2, negative;
#   g0/v0/r0 (positive) and g0/v0/r1 (negative) share "final same"; g0/v1/r1 (positive) also
#   says "final same" but under another parent, so it stays;
#   all four refinements of g0/v2 (two positive, two negative) say "final twin".
NOISY = "toy:q7"
NOISY_TREE = [
    [[1, 0, 1], [0, 1, 0], [1, 1, 0, 0]],
    [[1, 1, 1]],
]
SAME_TEXT = {
    "generations": {f"{NOISY}/g1": f"answer {NOISY}/g0"},
    "critiques": {f"{NOISY}/g0/v1": f"critique {NOISY}/g0/v0"},
    "refinements": {f"{NOISY}/g0/v0/r0": "final same", f"{NOISY}/g0/v0/r1": "final same",
                    f"{NOISY}/g0/v1/r1": "final same",
                    **{f"{NOISY}/g0/v2/r{i}": "final twin" for i in range(4)}},
}
ID_COLUMN = {"generations": "g_id", "critiques": "v_id", "refinements": "r_id"}


@pytest.fixture
def noisy(lake):
    write_trees(lake, KEY, {NOISY: NOISY_TREE})
    for table, texts in SAME_TEXT.items():
        rows = lake.read_partition(table, KEY).to_pylist()
        for row in rows:
            row["text"] = texts.get(row[ID_COLUMN[table]], row["text"])
        lake.write_partition(table, KEY,
                             pa.Table.from_pylist(rows, schema=schemas.schema_of(table)))
    write_credit(lake, 0.5)
    return lake


def test_role_datasets_leave_out_same_text_noise(noisy):
    tables = role_datasets(noisy, KEY)
    sft = {name: sorted(r["node_id"] for r in t.to_pylist())
           for name, t in tables.items() if name.startswith("sft_")}
    dpo = {name: sorted((r["pos_id"], r["neg_id"]) for r in t.to_pylist())
           for name, t in tables.items() if name.startswith("dpo_")}
    g0, g1 = f"{NOISY}/g0", f"{NOISY}/g1"
    assert sft == {
        "sft_generator": [],                                  # g1: g0 wrote the same answer
        "sft_verifier": [f"{g1}/v0"],                         # g0/v0: g0/v1 wrote the same
        "sft_refiner": [f"{g0}/v0/r2", f"{g0}/v1/r1",         # g0/v1/r1 kept: a cousin only
                        f"{g1}/v0/r0", f"{g1}/v0/r1", f"{g1}/v0/r2"],
    }
    assert dpo == {
        "dpo_generator": [],
        "dpo_verifier": [(f"{g0}/v0", f"{g0}/v2")],
        "dpo_refiner": [(f"{g0}/v0/r2", f"{g0}/v0/r1"),
                        (f"{g0}/v1/r1", f"{g0}/v1/r0"), (f"{g0}/v1/r1", f"{g0}/v1/r2")],
    }
    for name, table in tables.items():
        if name.startswith("dpo_"):
            assert all(r["chosen"] != r["rejected"] for r in table.to_pylist()), name


def test_dropped_counts_match_hand_counts_and_the_role_datasets(noisy):
    drops = {r["role"]: (r["sft_dropped_equal_text"], r["dpo_dropped_equal_text"])
             for r in role_dataset_drops(noisy, KEY).to_pylist()}
    assert drops == {"generator": (1, 1), "verifier": (1, 1), "refiner": (3, 5)}
    # every positive and every sibling pair is either in the role datasets or counted dropped
    everything = run_read_only(noisy, """
        select c.role, count(*) filter (where c.label) as positives,
               (select count(*) from credit p join credit n on n.parent_id = p.parent_id
                where p.label and not n.label and p.role = c.role) as pairs
        from credit c group by c.role""").to_pylist()
    tables = role_datasets(noisy, KEY)
    for row in everything:
        role = row["role"]
        assert tables[f"sft_{role}"].num_rows + drops[role][0] == row["positives"], role
        assert tables[f"dpo_{role}"].num_rows + drops[role][1] == row["pairs"], role


def test_dropped_counts_are_zero_per_role_on_a_tree_without_shared_texts(worked):
    write_credit(worked, 0.5)
    drops = role_dataset_drops(worked, KEY).to_pylist()
    assert drops == [{"role": role, "sft_dropped_equal_text": 0, "dpo_dropped_equal_text": 0}
                     for role in ("generator", "refiner", "verifier")]


def test_role_dataset_assets_report_the_dropped_counts(noisy, instance):
    import dagster as dg

    from assets.definitions import ALL_ASSETS
    from assets.partitions import shard_partitions
    from tests.resources import asset_resources

    instance.add_dynamic_partitions(shard_partitions.name, [KEY.key])
    names = [*schemas.SFT_TABLES, *schemas.DPO_TABLES]
    result = dg.materialize(ALL_ASSETS, selection=names, partition_key=KEY.key,
                            instance=instance, resources=asset_resources(noisy))
    assert result.success
    dropped = {m.asset_key.to_user_string(): m.metadata["dropped_equal_text"].value
               for m in result.asset_materializations_for_node("role_dataset_tables")}
    assert dropped == {"sft_generator": 1, "sft_verifier": 1, "sft_refiner": 3,
                       "dpo_generator": 1, "dpo_verifier": 1, "dpo_refiner": 5}
