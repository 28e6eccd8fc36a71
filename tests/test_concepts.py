import json
import logging

import numpy as np
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


# ---------------------------------------------------------------- input edges (issue 8, part 7)
def test_text_is_split_on_newlines_only(tmp_path):
    """str.splitlines also breaks on \\x0b \\x0c \\x1c-\\x1e \\x85 U+2028 U+2029: here those stay inside
    their line (a control character rejects the row; U+2028/9 are text), and line numbers count
    \\n, \\r\\n and \\r alone."""
    f = tmp_path / "c.txt"
    lines = ["first idea", "a\x0bb", "c\x0cd", "e\x1cf\x1dg\x1eh", "i\x85j", "verse\u2028chorus\u2029bridge",
             "with\ttab", "second", "third", "fourth", "fifth"]
    f.write_text("\r\n".join(lines[:6]) + "\r" + "\n".join(lines[6:]) + "\n", newline="")
    concepts, rejected = read_concepts(f, SETTINGS, 0)
    assert [(c.source, c.concept) for c in concepts] == [
        ("c.txt:1", "first idea"), ("c.txt:6", "verse\u2028chorus\u2029bridge"), ("c.txt:7", "with\ttab"),
        ("c.txt:8", "second"), ("c.txt:9", "third"), ("c.txt:10", "fourth"), ("c.txt:11", "fifth")]
    errors = {r.source: r.error for r in rejected}
    assert errors == {
        "c.txt:2": "c.txt line 2: field 'concept' has control character U+000B at character 2 (only tab is allowed)",
        "c.txt:3": "c.txt line 3: field 'concept' has control character U+000C at character 2 (only tab is allowed)",
        "c.txt:4": "c.txt line 4: field 'concept' has control character U+001C at character 2 (only tab is allowed)",
        "c.txt:5": "c.txt line 5: field 'concept' has control character U+0085 at character 2 (only tab is allowed)",
    }


def test_control_characters_reject_the_row_in_every_format(tmp_path):
    # txt: a NUL, a DEL, and one at the edge (not stripped away as whitespace)
    t = tmp_path / "c.txt"
    t.write_text("good one\nnul\x00here\ngood two\ndel\x7f\ngood three\nedge\x0c\ngood four\ngood five\n")
    concepts, rejected = read_concepts(t, SETTINGS, 0)
    assert [c.concept for c in concepts] == ["good one", "good two", "good three", "good four", "good five"]
    assert [(r.source, r.error.split(": ", 1)[1]) for r in rejected] == [
        ("c.txt:2", "field 'concept' has control character U+0000 at character 4 (only tab is allowed)"),
        ("c.txt:4", "field 'concept' has control character U+007F at character 4 (only tab is allowed)"),
        ("c.txt:6", "field 'concept' has control character U+000C at character 5 (only tab is allowed)")]
    assert rejected[0].raw == "nul\\x00here"  # escaped: no NUL reaches a manifest, the site or SQL
    assert len({r.album_id for r in rejected}) == 3

    # jsonl: an escaped NUL in the concept, a raw one in the line, ESC in another column
    j = tmp_path / "c.jsonl"
    j.write_text("\n".join([
        json.dumps({"concept": "fine", "genre": "folk"}),
        json.dumps({"concept": "a\u0000b"}),
        '{"concept": "raw\x00nul"}',
        json.dumps({"concept": "ok too", "mood": "dark\x1b[31m"}),
        json.dumps({"concept": "line\u2028separator inside a string"}),  # one row, not two
        json.dumps({"concept": "last"}),
    ]) + "\n")
    concepts, rejected = read_concepts(j, SETTINGS, 0)
    assert [c.concept for c in concepts] == ["fine", "line\u2028separator inside a string", "last"]
    assert {r.source: r.error for r in rejected} == {
        "c.jsonl:2": "c.jsonl line 2: field 'concept' has control character U+0000 at character 2 (only tab is allowed)",
        "c.jsonl:3": "c.jsonl line 3: control character U+0000 at character 17 (invalid JSON)",
        "c.jsonl:4": "c.jsonl line 4: field 'mood' has control character U+001B at character 5 (only tab is allowed)",
    }

    # csv: the column is named, the line counts the header
    c = tmp_path / "c.csv"
    c.write_bytes(b"concept,genre\ngood idea,jazz\nbad\x00idea,rock\nother,fo\x07lk\nfine,\n")
    concepts, rejected = read_concepts(c, SETTINGS, 0)
    assert [c.concept for c in concepts] == ["good idea", "fine"]
    assert [r.error for r in rejected] == [
        "c.csv line 3: field 'concept' has control character U+0000 at character 4 (only tab is allowed)",
        "c.csv line 4: field 'genre' has control character U+0007 at character 3 (only tab is allowed)"]

    # parquet: inside a list column too; tab is fine
    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"concept": ["tab\tok", "n\x00ul", "x", "c1\x9f"], "tags": [["a"], ["b"], ["c", "d\x1b"], []]}), p)
    concepts, rejected = read_concepts(p, SETTINGS, 0)
    assert [(c.concept, c.inputs) for c in concepts] == [("tab\tok", {"tags": ["a"]})]
    assert [r.error for r in rejected] == [
        "c.parquet row 2: field 'concept' has control character U+0000 at character 2 (only tab is allowed)",
        "c.parquet row 3: field 'tags' has control character U+001B at character 2 (only tab is allowed)",
        "c.parquet row 4: field 'concept' has control character U+009F at character 3 (only tab is allowed)"]


def _garbage(n: int, seed: int) -> bytes:
    """7-bit binary garbage: every byte 0-127 (NUL, \\n and \\r included), shuffled with a fixed seed."""
    rng = np.random.default_rng(seed)
    return bytes(rng.permutation(np.resize(np.arange(128, dtype=np.uint8), n)).tolist())


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
@pytest.mark.parametrize("size", [128, 65536])
def test_binary_garbage_is_not_a_concepts_file(tmp_path, suffix, size):
    """The issue's case: 7-bit garbage read as 46 albums. Now: no album, a named error."""
    f = tmp_path / f"garbage{suffix}"
    f.write_bytes(_garbage(size, seed=8))
    with pytest.raises(ConceptsError, match=r"garbage.* is not a text concepts file: \d+ of \d+ lines hold control "
                                            r"characters \(line \d+: U\+[0-9A-F]{4} at character \d+\)"):
        read_concepts(f, SETTINGS, 0)


def test_utf16_and_non_utf8_files_are_named(tmp_path):
    u = tmp_path / "c.txt"
    u.write_text("rainy city\nquiet forest\n", encoding="utf-16-le")  # Notepad's "Unicode", no BOM
    with pytest.raises(ConceptsError, match=r"not a text concepts file.*U\+0000.*UTF-16"):
        read_concepts(u, SETTINGS, 0)
    u.write_text("rainy city\nquiet forest\n", encoding="utf-16")  # with its BOM: not UTF-8 at all
    with pytest.raises(ConceptsError, match=r"cannot read .*not UTF-8 text \(byte 0xff at offset 0, line 1\)"):
        read_concepts(u, SETTINGS, 0)
    latin = tmp_path / "c.jsonl"
    latin.write_bytes(b'{"concept": "ok"}\n{"concept": "caf\xe9"}\n')
    with pytest.raises(ConceptsError, match=r"not UTF-8 text \(byte 0xe9 at offset 34, line 2\)"):
        read_concepts(latin, SETTINGS, 0)
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffidea with a byte order mark\n".encode())
    assert [c.concept for c in read_concepts(bom, SETTINGS, 0)[0]] == ["idea with a byte order mark"]
    bom.write_bytes("\ufeffgood\nbad \xff".encode("utf-8")[:-2] + b"\xff\n")  # offsets count the BOM
    with pytest.raises(ConceptsError, match=r"not UTF-8 text \(byte 0xff at offset 12, line 2\)"):
        read_concepts(bom, SETTINGS, 0)
