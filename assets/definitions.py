"""The one Definitions object: the composition root of the asset graph."""

import dagster as dg

from assets.questions import dataset_catalog, questions
from assets.resources import resources_for_env

ALL_ASSETS = [dataset_catalog, questions]

defs = dg.Definitions(assets=ALL_ASSETS, resources=resources_for_env())
