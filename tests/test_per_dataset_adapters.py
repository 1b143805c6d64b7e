"""One adapter set per dataset (benchmark), as in the paper: each dataset trains on its own
role data and is evaluated with its own adapters; pooling is an explicit option."""

from __future__ import annotations

import dagster as dg

from assets.definitions import ALL_ASSETS
from malt_lake.credit import compute_credit, role_datasets
from malt_lake.names import PartitionKey
from malt_lake.query import run_read_only
from malt_lake.training.data import dpo_examples, sft_examples
from malt_lake.training.store import AdapterStore, write_manifest
from tests.resources import asset_resources
from tests.trees import WORKED, write_trees

TWO_DATASETS = """
[[datasets]]
name = "addsub"
family = "numeric"
shard_size = 4
[datasets.splits.train]
kind = "arithmetic"
count = 4
[datasets.splits.heldout]
kind = "arithmetic"
count = 3
seed = 1
heldout = true

[[datasets]]
name = "muldiv"
family = "numeric"
shard_size = 4
[datasets.splits.train]
kind = "arithmetic"
count = 4
seed = 5
operations = ["mul"]
[datasets.splits.heldout]
kind = "arithmetic"
count = 3
seed = 6
operations = ["mul"]
heldout = true
"""


def publish_fake(root, dataset: str, version: str) -> None:
    store = AdapterStore(root, dataset)
    for role in ("generator", "verifier", "refiner"):
        with store.building(role, version) as build:
            write_manifest(build, {"base_model": "fake-deterministic", "role": role})
        store.publish(role, version)


def test_each_dataset_is_evaluated_with_its_own_adapters(lake, instance, tmp_path):
    config = tmp_path / "two.toml"
    config.write_text(TWO_DATASETS)
    resources = asset_resources(lake, config=config)
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    for key in instance.get_dynamic_partitions("shards"):
        assert dg.materialize(ALL_ASSETS, selection=["questions"], partition_key=key,
                              instance=instance, resources=resources).success
    publish_fake(lake.root, "addsub", "v-addsub")
    publish_fake(lake.root, "muldiv", "v-muldiv")
    for dataset in ("addsub", "muldiv"):
        assert dg.materialize(ALL_ASSETS, selection=["evaluation"], partition_key=dataset,
                              instance=instance, resources=resources, run_config={"ops": {
                                  "evaluation": {"config": {"seeds": 1}}}}).success
    used = run_read_only(lake, """
        select distinct dataset, t.adapter as adapter
        from (select dataset, unnest(trajectory) as t from eval_predictions
              where system = 'MALT+MV')
        order by all""").to_pylist()
    assert [(r["dataset"], r["adapter"].split("/")[-3:]) for r in used] == [
        (dataset, [dataset, role, f"v-{dataset}"]) for dataset in ("addsub", "muldiv")
        for role in ("generator", "refiner", "verifier")]


def test_role_data_is_per_dataset_unless_pooled(lake):
    for name in ("toy", "other"):
        key = PartitionKey(name, "train", 0)
        write_trees(lake, key, {f"{name}:q0": WORKED})
        lake.write_partition("credit", key, compute_credit(lake, key, 0.5))
        for table, rows in role_datasets(lake, key).items():
            lake.write_partition(table, key, rows)
    own = sft_examples(lake, "refiner", "train", ["toy"])
    pooled = sft_examples(lake, "refiner", "train", ["toy", "other"])
    assert own.partitions == ["toy.train.0000"] and own.n_rows == 10
    assert pooled.partitions == ["other.train.0000", "toy.train.0000"]
    assert pooled.n_rows == 2 * own.n_rows
    assert own.fingerprint != pooled.fingerprint  # another adapter version
    assert dpo_examples(lake, "verifier", "train", ["other"]).partitions == ["other.train.0000"]
