"""Evaluation on held-out questions: the paper's comparison table, per dataset.

No `from __future__ import annotations` here: Dagster inspects the context annotation.
"""

import dagster as dg
from pydantic import Field

from assets import rounds
from assets.concurrency import ACCELERATOR_POOL
from assets.partitions import dataset_partitions
from assets.resources import BackendResource, LakeResource, ProjectResource
from assets.table_metadata import column_schema, delta_metadata, table_metadata, write_id
from malt_lake.evaluate import (
    ROLES,
    EvalSettings,
    ablation_sets,
    evaluate,
    flips,
    scores,
    statistics,
    summary,
)
from malt_lake.lake import partition_lock
from malt_lake.markdown import to_markdown
from malt_lake.query import fetch
from malt_lake.report import (
    comparisons_markdown,
    flips_markdown,
    inline_image,
    summary_markdown,
    write_report,
)
from malt_lake.sqlfiles import sql_path
from malt_lake.training.store import AdapterStore


class EvalConfig(dg.Config, EvalSettings):
    """The library's ``EvalSettings`` (fields, defaults and bounds) as the asset's run config,
    plus whether the ablations run too."""

    ablations: bool = Field(default=False, description="Also evaluate the paper's ablations: "
                            "only G trained, only V and R, V and R with SFT alone (no DPO).")

    def settings(self) -> EvalSettings:
        """The evaluation's own settings (the ablations are extra systems, not sampling)."""
        return EvalSettings(**self.model_dump(exclude={"ablations"}))


def evaluation_assets(index: int) -> list[dg.AssetsDefinition]:
    """Round ``index``'s evaluation, with that round's adapters (the same dataset's)."""

    @dg.asset(key_prefix=rounds.key_prefix(index), group_name=rounds.in_round("evaluate", index),
              partitions_def=dataset_partitions,
              deps=[*(rounds.asset_key(f"{role}_adapter", index) for role in ROLES),
                    dg.AssetDep(rounds.asset_key("questions", index),
                                partition_mapping=dg.AllPartitionMapping())],
              kinds={"delta", "llm"}, metadata=table_metadata("eval_predictions"),
              pool=ACCELERATOR_POOL)
    def evaluation(context: dg.AssetExecutionContext, config: EvalConfig, lake: LakeResource,
                   project: ProjectResource, backend: BackendResource) -> dg.MaterializeResult:
        """SA, SA+MV, MA, MA+MV, MALT and MALT+MV (and the ablations, if asked) on the
        dataset's held-out split, with paired bootstrap intervals for MALT against SA and
        MA."""
        return _evaluate(context, config, lake, project, backend)

    return [evaluation]


def _evaluate(context: dg.AssetExecutionContext, config: EvalConfig, lake: LakeResource,
              project: ProjectResource, backend: BackendResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    spec = project.settings().dataset(dataset)
    the_lake = lake.lake_for(context)
    store = AdapterStore(the_lake, dataset)
    adapters = store.current_paths(ROLES)
    ablations = (ablation_sets(adapters, store.current_sft_paths(ROLES))
                 if config.ablations else None)
    sft_only = (ablations or {}).get("MALT(V+R SFT)", {})
    no_dpo = [role for role in ("verifier", "refiner")
              if adapters[role] and sft_only.get(role) == adapters[role]]
    if no_dpo:
        context.log.warning(f"{', '.join(no_dpo)}: DPO did not run, so MALT(V+R SFT) uses the "
                            "same adapter as MALT(V+R) for it")
    untrained = [role for role, path in adapters.items() if path is None]
    if untrained:
        context.log.warning(f"no {dataset} adapter for {', '.join(untrained)}: MALT runs "
                            "those roles on the base model")
    settings = config.settings()
    budgets = spec.budgets()
    with partition_lock(the_lake, f"evaluation.{dataset}"):
        predictions = evaluate(the_lake, backend.engine(), dataset, spec.eval_split, adapters,
                               settings, budgets, log=context.log.info, ablations=ablations,
                               prompts=spec.prompts, cut_loops=spec.cut_loops)
        written = the_lake.write_dataset_table("eval_predictions", dataset, predictions,
                                               write_id=write_id(context, "eval_predictions"))
        the_lake.write_dataset_table("eval_scores", dataset, scores(the_lake, dataset))
        intervals, comparisons = statistics(the_lake, dataset)
        the_lake.write_dataset_table("eval_comparisons", dataset, comparisons)
    table = summary(the_lake, dataset)
    flip_table = flips(the_lake, dataset)
    truncation = fetch(the_lake, "evaluation/truncation", {"dataset": dataset},
                       derived=True)
    settings_used = {
        "model": predictions.column("model")[0].as_py(), "adapters": adapters,
        "ablations": ablations or "off",
        "ablation_roles_without_dpo": ", ".join(no_dpo) or "none",
        "questions_per_seed": predictions.num_rows // (table.num_rows * settings.seeds),
        "token_budgets": budgets.model_dump(), "prompts": spec.prompts or spec.family,
        "cut_loops": spec.cut_loops,
        **settings.model_dump()}
    report, chart, _ = write_report(the_lake.root / "reports", dataset, table, intervals,
                                    comparisons, flip_table, settings_used)
    report_location = the_lake.share(report, chart)
    return dg.MaterializeResult(metadata={
        "truncation": dg.MetadataValue.md(to_markdown(truncation)),
        "dagster/row_count": predictions.num_rows,
        **delta_metadata(written),
        "results": dg.MetadataValue.md(summary_markdown(table, intervals)),
        "differences": dg.MetadataValue.md(comparisons_markdown(comparisons)),
        "flips": dg.MetadataValue.md(flips_markdown(flip_table)),
        "chart": dg.MetadataValue.md(inline_image(chart)),
        "report": dg.MetadataValue.path(report_location),
        "untrained_roles": ", ".join(untrained) or "none",
        "eval_id": predictions.column("eval_id")[0].as_py(),
        "scores_sql": dg.MetadataValue.path(str(sql_path("evaluation/summary"))),
        # the asset writes two more tables beside eval_predictions (its column schema)
        "eval_scores_columns": dg.MetadataValue.table_schema(column_schema("eval_scores")),
        "eval_comparisons_columns": dg.MetadataValue.table_schema(
            column_schema("eval_comparisons")),
    })
