"""Dataset loading: real shared files, Hugging Face layouts, the built-in set, bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from malt_lake.datasets import load_split
from malt_lake.datasets.arithmetic import generate, is_heldout_skeleton
from malt_lake.errors import ConfigError, DatasetRowError, HubUnavailable
from malt_lake.settings import (
    BUILTIN_DIFFICULTY,
    ArithmeticSource,
    DatasetSpec,
    FileSource,
    HubSource,
    load_settings,
)


def spec_for(path: Path, family: str = "numeric", **extra) -> DatasetSpec:
    return DatasetSpec(name="ds", family=family,
                       splits={"train": FileSource(path=str(path), **extra)})


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("name,family,rows", [("gsm8k", "numeric", 200), ("math", "math", 200),
                                              ("csqa", "mcq", 200)])
def test_shared_dev_sets_load_in_normalized_layout(datasets_dir, name, family, rows):
    loaded = load_split(spec_for(datasets_dir / name / "dev.jsonl", family), "train")
    frame = loaded.frame
    assert frame.height == rows
    assert frame["question_id"].n_unique() == rows
    assert frame["question"].null_count() == 0 and frame["answer"].null_count() == 0
    first = json.loads((datasets_dir / name / "dev.jsonl").read_text().splitlines()[0])
    assert frame["question_id"][0] == f"ds:{first['id']}"
    assert frame["answer"][0] == first["answer"]
    if family == "mcq":
        assert frame["choices"][0].to_list()[0] == first["choices"][0]
    else:
        assert frame["choices"].null_count() == rows


def test_huggingface_layouts_match_normalized(datasets_dir, tmp_path):
    gsm = [json.loads(x) for x in (datasets_dir / "gsm8k/dev.jsonl").read_text().splitlines()]
    hf_gsm = write_jsonl(tmp_path / "gsm.jsonl",
                         [{"question": r["question"], "answer": r["solution"]} for r in gsm])
    loaded = load_split(spec_for(hf_gsm), "train").frame
    assert loaded["answer"].to_list() == [r["answer"] for r in gsm]
    assert loaded["question_id"][3] == "ds:train-000004"  # no id field: split + line

    math = [json.loads(x) for x in (datasets_dir / "math/dev.jsonl").read_text().splitlines()]
    hf_math = write_jsonl(tmp_path / "math.jsonl",
                          [{"problem": r["question"], "solution": r["solution"]} for r in math])
    assert load_split(spec_for(hf_math, "math"), "train").frame["answer"].to_list() == \
        [r["answer"] for r in math]

    csqa = [json.loads(x) for x in (datasets_dir / "csqa/dev.jsonl").read_text().splitlines()]
    hf_csqa = tmp_path / "csqa.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist([
        {"id": r["id"], "question": r["question"], "answerKey": r["answer"],
         "choices": {"label": [c["label"] for c in r["choices"]],
                     "text": [c["text"] for c in r["choices"]]}} for r in csqa]), hf_csqa)
    frame = load_split(spec_for(hf_csqa, "mcq"), "train").frame
    assert frame["answer"].to_list() == [r["answer"] for r in csqa]
    assert frame["choices"][0].to_list() == csqa[0]["choices"]


BAD_ROWS = [
    ({"id": "a", "question": "What is 1+1?"}, "line 1, field 'answer': missing"),
    ({"id": "a", "question": "  ", "answer": "2"}, "line 1, field 'question': empty"),
    ({"id": "a", "question": 7, "answer": "2"},
     "line 1, field 'question': expected a string, got int"),
    ({"id": "a", "question": "q?", "answer": ["2"]},
     "line 1, field 'answer': expected a string, got list"),
    ({"id": ["a"], "question": "q?", "answer": "2"},
     "line 1, field 'id': expected a string or integer, got list"),
    ({"id": "a", "question": "q?", "answer": True},
     "line 1, field 'answer': expected a string, got bool"),
]


@pytest.mark.parametrize("row,message", BAD_ROWS)
def test_malformed_rows_name_file_line_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(DatasetRowError) as info:
        load_split(spec_for(path), "train")
    assert f"{path} {message}" in str(info.value)
    assert "nothing was written" in str(info.value)


def test_bad_json_non_utf8_and_duplicates_are_reported_with_lines(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b'{"id": "a", "question": "q1?", "answer": "1"}\n'
        b'{"id": "b", "question": "q2?", "answer": \n'
        b'{"id": "c", "question": "caf\xe9?", "answer": "3"}\n'
        b'{"id": "a", "question": "q4?", "answer": "4"}\n'
        b'[1, 2]\n'
    )
    with pytest.raises(DatasetRowError) as info:
        load_split(spec_for(path), "train")
    text = str(info.value)
    assert "4 malformed row(s)" in text
    assert f"{path} line 2: bad JSON" in text
    assert f"{path} line 3: not valid UTF-8" in text
    assert f"{path} line 4, field 'id': duplicate id 'a' (first on line 1)" in text
    assert f"{path} line 5: expected a JSON object, got list" in text


def test_huge_question_is_a_malformed_row(tmp_path):
    path = write_jsonl(tmp_path / "big.jsonl",
                       [{"id": "a", "question": "x" * 10_000_000, "answer": "1"}])
    with pytest.raises(DatasetRowError, match="field 'question': 10000000 characters"):
        load_split(spec_for(path), "train")


def test_mcq_answer_must_be_a_choice_label(tmp_path):
    path = write_jsonl(tmp_path / "mcq.jsonl", [{
        "id": "a", "question": "Pick", "answer": "F",
        "choices": [{"label": "A", "text": "x"}, {"label": "B", "text": "y"}]}])
    with pytest.raises(DatasetRowError, match="'F' is not one of the choice labels"):
        load_split(spec_for(path, "mcq"), "train")


def test_skip_policy_drops_bad_rows_and_reports_them(datasets_dir):
    spec = spec_for(datasets_dir / "math/train.jsonl", "math", limit=None)
    spec = spec.model_copy(update={"bad_rows": "skip"})
    loaded = load_split(spec, "train")
    # the two known source defects: an empty \boxed{} gives an empty answer
    assert sorted(p.line for p in loaded.skipped) == sorted(
        i + 1 for i, line in enumerate((datasets_dir / "math/train.jsonl").read_text()
                                       .splitlines()) if '"answer": ""' in line)
    assert len(loaded.skipped) == 2
    assert loaded.frame.height == 11_800 - 2
    assert loaded.frame["row_index"].to_list() == list(range(loaded.frame.height))


def test_missing_file_and_offline_hub_have_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist; check the path"):
        load_split(spec_for(tmp_path / "nope.jsonl"), "train")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = DatasetSpec(name="g", family="numeric",
                       splits={"train": HubSource(name="openai/gsm8k", config="main")})
    with pytest.raises(HubUnavailable, match=r"openai/gsm8k.*HF_HUB_OFFLINE=1.*kind = \"file\""):
        load_split(spec, "train")


def test_arithmetic_is_deterministic_correct_and_heldout_disjoint():
    train = list(generate(ArithmeticSource(count=2000, seed=0)))
    again = list(generate(ArithmeticSource(count=2000, seed=0)))
    assert train == again
    heldout = list(generate(ArithmeticSource(count=500, seed=0, heldout=True)))
    assert not {p.skeleton for p in train} & {p.skeleton for p in heldout}
    assert all(not is_heldout_skeleton(p.skeleton) for p in train)
    for problem in train + heldout:
        value = 0
        for i, token in enumerate(problem.skeleton.split()):
            value = int(token) if i == 0 else eval(f"{value}{token}")
        assert value == problem.answer >= 0
        assert problem.question.endswith("have now?")


def test_arithmetic_knobs_shape_problems():
    easy = list(generate(ArithmeticSource(count=300, max_steps=1, max_number=9,
                                          operations=["add"])))
    assert all(len(p.skeleton.split()) == 2 and "+" in p.skeleton for p in easy)
    assert max(p.answer for p in easy) <= 18
    hard = list(generate(ArithmeticSource(count=300, min_steps=3, max_steps=3, max_number=30)))
    assert all(len(p.skeleton.split()) == 4 for p in hard)


def test_config_file_paths_expand_env_and_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_HOME", str(tmp_path))
    config = tmp_path / "c.toml"
    config.write_text('[[datasets]]\nname = "g"\nfamily = "numeric"\n'
                      '[datasets.splits.train]\nkind = "file"\npath = "${DATA_HOME}/g.jsonl"\n')
    settings = load_settings(config)
    assert settings.datasets[0].splits["train"].path == f"{tmp_path}/g.jsonl"
    config.write_text('[[datasets]]\nname = "G/../x"\nfamily = "numeric"\n'
                      '[datasets.splits.train]\nkind = "arithmetic"\n')
    with pytest.raises(ConfigError, match="invalid dataset name"):
        load_settings(config)
    config.write_text("not toml [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config)
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; configured: arith"):
        load_settings(None).dataset("nope")


def test_built_in_projects_by_name_share_one_difficulty_and_keep_held_out_apart():
    demo, study = load_settings("demo").dataset("arith"), load_settings("study").dataset("arith")
    assert load_settings(None) == load_settings("demo")
    for spec in (demo, study):
        knobs = {k: getattr(spec.splits["heldout"], k) for k in BUILTIN_DIFFICULTY}
        assert knobs == BUILTIN_DIFFICULTY and spec.splits["heldout"].heldout
    assert set(study.splits) == {"train", "dev", "heldout"}
    assert study.splits["heldout"].count >= 200 and not study.splits["dev"].heldout
    held_out = {p.skeleton for p in generate(study.splits["heldout"])}
    trained = {p.skeleton for s in ("train", "dev") for p in generate(study.splits[s])}
    assert held_out and not held_out & trained
