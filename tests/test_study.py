"""`malt-lake study` end to end through the CLI (fake backend, real training at one step):
every phase, the report with intervals and diagnostics, and a rerun that resumes."""

from __future__ import annotations

import shutil

from malt_lake.lake import Lake
from malt_lake.names import PartitionKey
from malt_lake.query import run_read_only
from tests.test_reliability import env_for, run_cli


def test_the_study_runs_every_phase_reports_intervals_and_resumes(tmp_path):
    study = tmp_path / "study"
    env = env_for(tmp_path / "warehouse")  # with a DAGSTER_HOME of another project
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('base_model = "embedded"\n[sft]\nmax_steps = 1\nmin_rows = 1\n'
                      '[dpo]\nmax_steps = 1\nmin_rows = 1\n')
    args = ["study", "--warehouse", str(study), "--train-shards", "1", "--seeds", "2",
            "--eval-limit", "6", "--max-tokens", "16", "--recipe", str(recipe), "--ablations"]
    first = run_cli(env, *args, timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]
    # the study keeps its own instance beside its lake, whatever DAGSTER_HOME says
    assert (study / "dagster").is_dir() and not (tmp_path / "warehouse").exists()
    lake = Lake(study)
    splits = {r["split"]: r["n"] for r in run_read_only(
        lake, "select split, sum(n_questions)::int n from shards group by all").to_pylist()}
    assert splits == {"train": 64, "dev": 64, "heldout": 200}
    trained_on = run_read_only(lake, "select distinct shard from generations").to_pylist()
    assert trained_on == [{"shard": "train.0000"}]
    pairs = run_read_only(lake, "select system, baseline, verdict from eval_comparisons"
                          ).to_pylist()
    assert len(pairs) == 4 + 6  # the paper's four, then each ablation with and without MV
    assert "MALT+MV vs MA+MV:" in first.stdout and "Done in" in first.stdout
    report = (study / "reports" / "study-arith.md").read_text()
    for section in ("## Paired differences", "## Positive nodes per role at theta",
                    "## Role datasets", "## Truncation", "## Training",
                    "## Wall time per phase", "| evaluation |", "MALT(V+R SFT)+MV − MA+MV"):
        assert section in report, section
    assert (study / "reports" / "eval-arith.png").is_file()

    # a study killed while it wrote the refinements resumes there: G and V are not redone
    def versions() -> dict:
        return {t: lake.version(t) for t in ("generations", "critiques")}

    written = versions()
    shutil.rmtree(study / "lake" / "refinements")  # never committed, as if killed mid-write
    again = run_cli(env, *args, "--theta", "0.4", timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming at refinements" in again.stdout
    assert versions() == written  # G and V not rewritten
    assert lake.has_partition("refinements", PartitionKey.parse("arith.train.0000"))
    thetas = run_read_only(lake, "select distinct theta from credit").column("theta")
    assert thetas.to_pylist() == [0.4]  # credit and role data follow the new theta

    third = run_cli(env, *args, "--theta", "0.6", timeout=1200)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "in the lake already; credit and role data at theta 0.6" in third.stdout
    assert versions() == written
    thetas = run_read_only(lake, "select distinct theta from credit").column("theta")
    assert thetas.to_pylist() == [0.6]
