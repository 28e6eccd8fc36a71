import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.concepts import ConceptsError, album_id_for, read_concepts

SETTINGS = {"tracks_per_album": 2}


def test_txt_skips_blanks_and_comments(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("# header\n\nfirst idea\n   \nsecond idea\n# trailing\n")
    concepts, rejected = read_concepts(f, SETTINGS, 0)
    assert [c.concept for c in concepts] == ["first idea", "second idea"]
    assert [c.source for c in concepts] == ["c.txt:3", "c.txt:5"]
    assert not rejected


def test_csv_extra_columns_become_inputs(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("concept,genre,era\nrainy city,jazz,1979\nquiet forest,,\n")
    concepts, _ = read_concepts(f, SETTINGS, 0)
    assert concepts[0].inputs == {"genre": "jazz", "era": "1979"}  # text kept as text
    assert concepts[1].inputs == {}
    assert concepts[0].source == "c.csv:2"


def test_parquet_and_missing_concept_column(tmp_path):
    f = tmp_path / "c.parquet"
    pq.write_table(pa.table({"concept": ["a", "b"], "mood": ["calm", None]}), f)
    concepts, _ = read_concepts(f, SETTINGS, 0)
    assert [(c.concept, c.inputs) for c in concepts] == [("a", {"mood": "calm"}), ("b", {})]
    g = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"idea": ["a"]}), g)
    with pytest.raises(ConceptsError, match="no 'concept' column"):
        read_concepts(g, SETTINGS, 0)


def test_bad_rows_are_named_and_kept_as_failures(tmp_path):
    f = tmp_path / "c.jsonl"
    lines = [
        json.dumps({"concept": "good one", "genre": "folk"}),
        json.dumps({"concept": ""}),
        json.dumps({"concept": 42}),
        "{not json",
        json.dumps({"concept": "x" * 2001}),
        json.dumps(["a list"]),
        json.dumps({"concept": "another good one"}),
    ]
    f.write_text("\n".join(lines) + "\n")
    concepts, rejected = read_concepts(f, SETTINGS, 0)
    assert [c.concept for c in concepts] == ["good one", "another good one"]
    errors = {r.source: r.error for r in rejected}
    assert set(errors) == {"c.jsonl:2", "c.jsonl:3", "c.jsonl:4", "c.jsonl:5", "c.jsonl:6"}
    assert "line 2" in errors["c.jsonl:2"] and "empty" in errors["c.jsonl:2"]
    assert "must be text" in errors["c.jsonl:3"] and "int" in errors["c.jsonl:3"]
    assert "invalid JSON" in errors["c.jsonl:4"]
    assert "2001 characters" in errors["c.jsonl:5"]
    assert len({r.album_id for r in rejected}) == len(rejected)


def test_duplicates_collapse_with_warning(tmp_path, caplog):
    f = tmp_path / "c.txt"
    f.write_text("same idea\nother idea\nsame idea\n")
    with caplog.at_level(logging.WARNING):
        concepts, _ = read_concepts(f, SETTINGS, 0)
    assert [c.concept for c in concepts] == ["same idea", "other idea"]
    assert "c.txt:3" in caplog.text and "duplicate of c.txt:1" in caplog.text


def test_album_id_is_stable_and_depends_on_every_part():
    a = album_id_for("idea", {"genre": "jazz"}, SETTINGS, 0)
    assert a == album_id_for("idea", {"genre": "jazz"}, dict(SETTINGS), 0)
    others = {
        album_id_for("idea2", {"genre": "jazz"}, SETTINGS, 0),
        album_id_for("idea", {"genre": "rock"}, SETTINGS, 0),
        album_id_for("idea", {"genre": "jazz"}, {"tracks_per_album": 3}, 0),
        album_id_for("idea", {"genre": "jazz"}, SETTINGS, 1),
    }
    assert a not in others and len(others) == 4
    assert a.isalnum() and len(a) == 16


def test_missing_or_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConceptsError, match="not found"):
        read_concepts(tmp_path / "nope.txt", SETTINGS, 0)
    bad = tmp_path / "c.txt"
    bad.write_bytes(b"\xff\xfe\xfa broken utf8")
    with pytest.raises(ConceptsError, match="cannot read"):
        read_concepts(bad, SETTINGS, 0)
    with pytest.raises(ConceptsError, match="unsupported"):
        (tmp_path / "c.xlsx").write_text("x")
        read_concepts(tmp_path / "c.xlsx", SETTINGS, 0)
