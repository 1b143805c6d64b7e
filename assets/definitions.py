"""The one Definitions object: the composition root of the asset graph."""

import dagster as dg

from assets.credit import credit, generation_rewards, leaf_rewards, role_dataset_tables
from assets.evaluation import evaluation
from assets.expansion import critiques, generations, refinements
from assets.jobs import JOBS
from assets.questions import dataset_catalog, questions
from assets.resources import resources_for_env
from assets.training import generator_adapter, refiner_adapter, verifier_adapter

ALL_ASSETS = [
    dataset_catalog, questions,
    generations, critiques, refinements,
    generation_rewards, leaf_rewards, credit, role_dataset_tables,
    generator_adapter, verifier_adapter, refiner_adapter,
    evaluation,
]

# in-process runs: the steps of a run share one process, so the backend resource's engine (the
# model, on a GPU its memory) is created once per run and shared by G, V and R; independent
# partitions still run in parallel as separate runs
def definitions_for(resources: dict) -> dg.Definitions:
    """The graph and its jobs over ``resources`` (the environment at run time, another round's
    lake)."""
    return dg.Definitions(assets=ALL_ASSETS, jobs=JOBS, resources=resources,
                          executor=dg.in_process_executor)


defs = definitions_for(resources_for_env())
