"""The one Definitions object: the composition root of the asset graph."""

import dagster as dg

from assets.credit import credit_assets
from assets.evaluation import evaluation_assets
from assets.expansion import expansion_assets
from assets.jobs import all_jobs
from assets.questions import ingest_assets
from assets.resources import resources_for_env
from assets.training import training_assets
from malt_lake.environment import environment

DEFINED_ROUNDS = environment().rounds


def assets_of_round(index: int) -> list[dg.AssetsDefinition]:
    """Round ``index``'s graph: round 1 under plain keys, round i >= 2 the same graph under
    the key prefix ``round_<i>`` (``assets.rounds``), parents first."""
    return [*ingest_assets(index), *expansion_assets(index), *credit_assets(index),
            *training_assets(index), *evaluation_assets(index)]


BASE_ASSETS = assets_of_round(1)

ALL_ASSETS = [*BASE_ASSETS, *(asset for index in range(2, DEFINED_ROUNDS + 1)
                              for asset in assets_of_round(index))]


# in-process runs: the steps of a run share one process, so the backend resource's engine (the
# model, on a GPU its memory) is created once per run and shared by G, V and R; independent
# partitions still run in parallel as separate runs
def definitions_for(resources: dict) -> dg.Definitions:
    """The graph of every round and their jobs over ``resources`` (the environment at run
    time)."""
    return dg.Definitions(assets=ALL_ASSETS, jobs=all_jobs(DEFINED_ROUNDS), resources=resources,
                          executor=dg.in_process_executor)


defs = definitions_for(resources_for_env())
