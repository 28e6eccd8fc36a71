"""The LLM director against a scripted OpenAI-compatible server on loopback.

The real ``openai`` client talks HTTP to ``tests/openai_server.py``; every test has small
timeouts and backoffs, so the whole file runs in a few seconds and nothing can hang.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from openai_server import (  # noqa: E402
    ScriptedOpenAI,
    good,
    good_plan,
    hang,
    reply,
    reply_json,
    status,
)

from director.llm import DirectorError, LLMDirector, extract_json, forget_server_formats  # noqa: E402
from director.plan import check_templates, load_failed_plan  # noqa: E402
from director.schema import AlbumPlan  # noqa: E402
from director.templates import TemplateVarError  # noqa: E402
from ray_jobs.planner import Planner  # noqa: E402

KEY = "sk-albumforge-TEST-c0ffee-5ecret-0042"
CONCEPT = "a harbour at night, ferries and sodium lamps"


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    faulthandler.dump_traceback_later(60, exit=True)  # a hung test ends the run, loudly
    # setenv first: the original (absent) value is recorded and restored after the test,
    # also when a helper below sets os.environ["OPENAI_BASE_URL"] itself
    monkeypatch.setenv("OPENAI_BASE_URL", "unset")
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    forget_server_formats()
    yield
    forget_server_formats()
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def server():
    with ScriptedOpenAI() as srv:
        yield srv


def director(srv: ScriptedOpenAI, tmp_path: Path | None = None, **kw) -> LLMDirector:
    """An LLM director on the scripted server; ``kw``: plan-section fields (``model`` names
    the director model)."""
    from albumforge.config import PlanConfig

    plan = dict(director="openai", director_model="test-model", timeout_s=1.0, max_attempts=3, tracks_per_album=3,
                track_seconds=4.0, retry_backoff_s=0.01, retry_backoff_max_s=0.05, max_retries=4)
    if "model" in kw:
        kw["director_model"] = kw.pop("model")
    plan.update(kw)
    return LLMDirector(PlanConfig(**plan), cache_dir=(tmp_path / "cache") if tmp_path else None, base_url=srv.url)


def plan_cfg(srv: ScriptedOpenAI, tmp_path: Path, **kw) -> dict:
    """A Planner's plan section and cache; the server comes from OPENAI_BASE_URL, as in a run."""
    from albumforge.config import PlanConfig

    os.environ["OPENAI_BASE_URL"] = srv.url  # the autouse fixture removes it again
    plan = PlanConfig(**{**dict(director="openai", director_model="test-model", tracks_per_album=3,
                                track_seconds=4.0, timeout_s=1.0, retry_backoff_s=0.01, retry_backoff_max_s=0.05),
                         **kw})
    return {"plan": plan, "cache_dir": str(tmp_path / "out" / "cache" / "director")}


def rows(*concepts, inputs=None) -> dict:
    n = len(concepts)
    return {
        "album_id": np.array([f"album{k:02d}" for k in range(n)], dtype=object),
        "concept": np.array(list(concepts), dtype=object),
        "source": np.array([f"concepts.txt:{k + 1}" for k in range(n)], dtype=object),
        "inputs_json": np.array([json.dumps(inputs or {})] * n, dtype=object),
    }


def user_text(body: dict) -> str:
    return "\n".join(m["content"] for m in body["messages"] if m["role"] != "assistant")


# ---------------------------------------------------------------- answers
def test_good_json_plan_and_accounting(server):
    plan, meta = director(server).plan("a1", CONCEPT, {})
    assert isinstance(plan, AlbumPlan) and len(plan.tracks) == 3
    assert (meta["director"], meta["model"], meta["attempts"], meta["requests"]) == ("openai", "test-model", 1, 1)
    assert meta["tokens_in"] > 100 and meta["tokens_out"] > 50 and meta["seconds"] > 0
    assert [m["role"] for m in meta["messages"]] == ["system", "user", "assistant"]
    assert json.loads(meta["answers"][0])["title"] == plan.title
    body = server.bodies[0]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "AlbumPlan"
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert "exactly 3 tracks" in body["messages"][1]["content"]


@pytest.mark.parametrize("wrap", [
    "Here is your album plan:\n{}\nEnjoy!",
    "```json\n{}\n```",
    "Sure! ```\n{}\n``` Let me know if you want changes.",
])
def test_json_in_prose_or_code_fences(server, wrap):
    server.script.append(reply(wrap.replace("{}", json.dumps(good_plan()))))
    plan, meta = director(server).plan("a1", CONCEPT, {})
    assert plan.title == "Harbour Lights" and meta["attempts"] == 1


def test_extract_json_unwraps_and_names_errors():
    assert extract_json('{"AlbumPlan": {"title": "x"}}', AlbumPlan) == {"title": "x"}
    with pytest.raises(ValueError, match="not valid JSON"):
        extract_json('{"title": "x",,}')
    with pytest.raises(ValueError, match="empty"):
        extract_json("   ")


def test_invalid_json_then_good_is_reasked_with_the_error(server):
    server.script.extend([reply('{"title": "Harbour", "tracks": [ oops'), good()])
    plan, meta = director(server).plan("a1", CONCEPT, {})
    assert meta["attempts"] == 2 and len(server.requests) == 2
    reask = server.bodies[1]["messages"]
    assert [m["role"] for m in reask] == ["system", "user", "assistant", "user"]
    assert reask[2]["content"].startswith('{"title": "Harbour"')
    assert "not valid JSON" in reask[3]["content"]
    assert "not valid JSON" in meta["errors"][0]


def test_truncated_answer_is_reasked_asking_for_a_shorter_one(server):
    whole = json.dumps(good_plan())
    server.script.extend([reply(whole[: len(whole) // 2], finish_reason="length"), good()])
    plan, meta = director(server).plan("a1", CONCEPT, {})
    assert meta["attempts"] == 2 and len(plan.tracks) == 3
    shown = server.bodies[1]["messages"][-1]["content"]
    assert "cut off at the token limit: keep it shorter" in shown


def test_schema_violation_then_good(server):
    bad = good_plan()
    bad["tracks"][1]["duration_s"] = -5
    bad["soundscape"]["tempo_max_bpm"] = 20
    bad["mood"] = "extra field"
    server.script.extend([reply_json(bad), good()])
    plan, meta = director(server).plan("a1", CONCEPT, {})
    assert meta["attempts"] == 2
    shown = server.bodies[1]["messages"][-1]["content"]
    assert "tracks.1.duration_s" in shown and "tempo_max_bpm" in shown and "mood" in shown


def test_plan_rules_are_reasked(server):
    """Track count and a tempo per track hold for answers the server did not guide too
    (json_object, text, a server that ignores the schema)."""
    short = good_plan(n_tracks=2)
    del short["tracks"][0]["tempo_bpm"]
    short["tracks"][0]["music_prompt"] = "something nice and vague"
    short["tracks"][1]["music_prompt"] = "dub, 120 bpm, bass"  # a tempo in the text counts too...
    del short["tracks"][1]["tempo_bpm"]
    server.script.extend([reply_json(short), good()])
    plan, meta = director(server).plan("a1", CONCEPT, {})
    shown = server.bodies[1]["messages"][-1]["content"]
    assert "2 tracks but exactly 3" in shown and "track 1 gives no tempo" in shown
    assert "track 2" not in shown
    assert len(plan.tracks) == 3


def test_tempo_bpm_is_written_into_the_music_prompt(server):
    plan_ = good_plan()
    plan_["tracks"][0]["music_prompt"] = "ambient dub techno, 200 bpm, Rhodes piano"  # ...but tempo_bpm wins
    plan_["soundscape"]["instrumental"] = False  # not the model's to say
    server.script.append(reply_json(plan_))
    plan, meta = director(server).plan("a1", CONCEPT, {})
    assert meta["attempts"] == 1 and plan.soundscape.instrumental is True
    assert plan.tracks[0].music_prompt == "ambient dub techno, 73 bpm, Rhodes piano"
    assert plan.tracks[1].music_prompt.startswith("ambient dub techno, 76 bpm, Rhodes piano, upright bass")
    assert [t.tempo_bpm for t in plan.tracks] == [73, 76, 79]


def test_durations_are_kept_near_the_asked_length(server):
    long = good_plan(seconds=600)
    server.script.append(reply_json(long))
    plan, _ = director(server, track_seconds=4.0).plan("a1", CONCEPT, {})
    assert {t.duration_s for t in plan.tracks} == {6.0}


# ---------------------------------------------------------------- transport
def test_429_then_good_retries_with_backoff(server):
    server.script.extend([status(429, "rate limited", retry_after=0.05), good()])
    t0 = time.perf_counter()
    plan, meta = director(server).plan("a1", CONCEPT, {})
    assert (meta["attempts"], meta["requests"], meta["retries"]) == (1, 2, 1)
    assert time.perf_counter() - t0 >= 0.05  # Retry-After was honoured
    assert "HTTP 429" in meta["errors"][0]


def test_500_several_times_then_good_and_then_giving_up(server):
    server.script.extend([status(500), status(502), status(503), good()])
    plan, meta = director(server).plan("a1", CONCEPT, {})
    assert (meta["requests"], meta["retries"]) == (4, 3)
    server.script.extend([status(500)] * 3)
    with pytest.raises(DirectorError, match=r"HTTP 500.*gave up after 3 tries") as e:
        director(server, max_retries=2).plan("a2", CONCEPT, {})
    assert e.value.meta["requests"] == 3


def test_hang_past_the_timeout_is_retried(server):
    server.script.extend([hang(5), good()])
    t0 = time.perf_counter()
    plan, meta = director(server, timeout_s=0.3).plan("a1", CONCEPT, {})
    assert time.perf_counter() - t0 < 3
    assert meta["retries"] == 1 and "timed out after 0.3 s" in meta["errors"][0]


def test_json_schema_refused_falls_back_once_per_server(tmp_path):
    with ScriptedOpenAI(reject_json_schema=True) as srv:
        d = director(srv)
        d.plan("a1", CONCEPT, {})
        d.plan("a2", CONCEPT + " two", {})
        kinds = [(b.get("response_format") or {}).get("type") for b in srv.bodies]
        assert kinds == ["json_schema", "json_object", "json_object"]
        # a new director (e.g. another actor's) for the same server remembers it too
        director(srv).plan("a3", CONCEPT + " three", {})
        assert (srv.bodies[-1].get("response_format") or {}).get("type") == "json_object"


def test_plain_instructions_when_json_object_is_refused_too():
    def refuse_formats(body):
        if body.get("response_format"):
            return status(400, "response_format is not supported")
        return good()

    with ScriptedOpenAI(default=refuse_formats) as srv:
        plan, meta = director(srv).plan("a1", CONCEPT, {})
        assert [bool(b.get("response_format")) for b in srv.bodies] == [True, True, False]
        assert meta["response_format"] == ["text"]
        assert "JSON schema" in srv.bodies[-1]["messages"][1]["content"]  # the instructions carry it


def test_wrong_key_fails_fast_without_more_requests():
    with ScriptedOpenAI(api_key="sk-the-right-one-xxxxxxxx") as srv:
        d = director(srv)
        with pytest.raises(DirectorError, match="HTTP 401"):
            d.plan("a1", CONCEPT, {})
        with pytest.raises(DirectorError, match="not asked"):
            d.plan("a2", CONCEPT, {})
        assert len(srv.requests) == 1


# ---------------------------------------------------------------- the batch
def test_never_valid_album_is_a_failed_row_and_the_batch_goes_on(tmp_path):
    def answer(body):
        if "doomed" in user_text(body):
            return reply("I am sorry, I cannot produce JSON today.")
        return good()

    with ScriptedOpenAI(default=answer) as srv:
        out = tmp_path / "out"
        planner = Planner(str(out), **plan_cfg(srv, tmp_path, max_attempts=2))
        batch = planner(rows("a calm harbour", "a doomed concept", "a windy cliff"))
        errors = list(batch["plan_error"])
        assert errors[0] == errors[2] == ""
        assert "no valid AlbumPlan in 2 answers" in errors[1] and "no JSON object" in errors[1]
        assert batch["plan_json"][1] == ""
        failed = load_failed_plan(out, "album01")
        assert failed["director"]["attempts"] == 2 and failed["director"]["tokens_in"] > 0
        assert not list((out / "cache").rglob("*.json")) or all(
            "doomed" not in p.read_text() for p in (out / "cache").rglob("*.json"))  # failed answers not replayed
        ok = json.loads(batch["plan_json"][0])
        assert ok["director"]["model"] == "test-model" and (out / "plans" / "album00.json").exists()


def test_cache_second_run_sends_no_request(server, tmp_path):
    plan1, meta1 = director(server, tmp_path).plan("a1", CONCEPT, {"genre": "dub"})
    assert len(server.requests) == 1 and meta1["cached"] == 0
    plan2, meta2 = director(server, tmp_path).plan("a1", CONCEPT, {"genre": "dub"})  # a fresh process would too
    assert len(server.requests) == 1 and meta2["cached"] == 1
    assert plan2 == plan1 and meta2["tokens_in"] == meta1["tokens_in"]
    director(server, tmp_path, temperature=0.2).plan("a1", CONCEPT, {"genre": "dub"})  # other params: asked
    assert len(server.requests) == 2


def test_cache_replays_a_reasked_conversation(server, tmp_path):
    server.script.extend([reply("nope"), good()])
    director(server, tmp_path).plan("a1", CONCEPT, {})
    assert len(server.requests) == 2
    _, meta = director(server, tmp_path).plan("a1", CONCEPT, {})
    assert len(server.requests) == 2 and (meta["attempts"], meta["cached"]) == (2, 2)


def test_planner_plans_a_batch_concurrently_within_the_limit(tmp_path):
    with ScriptedOpenAI(latency_s=0.3) as srv:
        planner = Planner(str(tmp_path / "out"), **plan_cfg(srv, tmp_path, concurrency=4))
        t0 = time.perf_counter()
        batch = planner(rows(*[f"concept number {k}" for k in range(8)]))
        wall = time.perf_counter() - t0
        assert list(batch["plan_error"]) == [""] * 8
        assert srv.max_in_flight == 4  # the limit held, and was used
        assert wall < 8 * 0.3 * 0.75  # serial: 2.4 s; four at a time: 0.6 s plus overhead


# ---------------------------------------------------------------- templates
def test_extra_inputs_reach_the_prompt(server):
    inputs = {"genre": "zydeco", "mood": "jubilant", "era": "1920s", "language": "French",
              "track_count": "4", "artist": "Les Lanternes", "patron_saint": "Cecilia"}
    plan, meta = director(server, lyrics=True).plan("a1", CONCEPT, inputs)
    text = user_text(server.bodies[0])
    for value in ("zydeco", "jubilant", "1920s", "French", "Les Lanternes", "Cecilia", "exactly 4 tracks"):
        assert value in text, value
    assert len(plan.tracks) == 4 and all(t.lyrics for t in plan.tracks)


def test_user_prompts_folder_overrides_one_template(server, tmp_path):
    own = tmp_path / "my-prompts"
    own.mkdir()
    (own / "tracks.j2").write_text(
        "MY TRACKS STEP: exactly {{ track_count }} tracks for a {{ vibe }} night"
        "{% if inputs.get('venue') %} at {{ inputs['venue'] }}{% endif %}{% if room is defined %} in {{ room }}{% endif %}.")
    d = director(server, prompts_dir=own)
    d.plan("a1", CONCEPT, {"vibe": "smoky", "venue": "the Blue Note"})
    user = server.bodies[0]["messages"][1]["content"]
    assert "MY TRACKS STEP: exactly 3 tracks for a smoky night at the Blue Note." in user
    assert "Step 2 of 5: plan the soundscape" in user  # the other steps are the shipped ones
    assert "art director" in server.bodies[0]["messages"][0]["content"]


def test_check_templates_names_row_and_variable_before_any_call(tmp_path):
    from albumforge.config import PlanConfig
    from ray_jobs.concepts import read_concepts

    own = tmp_path / "prompts"
    own.mkdir()
    (own / "album.j2").write_text("Album for {{ concept }} with a {{ vibe }} cover{% if room is defined %}"
                                  " in {{ room }}{% endif %}{{ inputs.get('venue', '') }}.")
    csv = tmp_path / "concepts.csv"
    csv.write_text("concept,vibe,venue\nharbour,smoky,\ncliffs,,the pier\n")
    concepts, _ = read_concepts(csv, {}, 0)
    cfg = PlanConfig(director="openai", prompts_dir=own)
    with pytest.raises(TemplateVarError) as e:
        check_templates(cfg, concepts)
    msg = str(e.value)
    assert msg.startswith("concepts.csv line 3:") and "'album.j2'" in msg and "'vibe'" in msg
    check_templates(cfg, concepts[:1])  # the row with a vibe is fine
    # the offline director with its own shipped templates needs nothing
    check_templates(PlanConfig(director="offline"), concepts)


def test_offline_override_is_checked_too(tmp_path):
    from albumforge.config import PlanConfig
    from ray_jobs.concepts import Concept

    own = tmp_path / "prompts" / "offline"
    own.mkdir(parents=True)
    (own / "cover_prompt.j2").write_text("cover of {{ concept }} in {{ palette_name }}")
    with pytest.raises(TemplateVarError, match=r"c\.jsonl line 7: .*palette_name"):
        check_templates(PlanConfig(director="offline", prompts_dir=own.parent), [Concept("x", "sea", {}, "c.jsonl:7")])


# ---------------------------------------------------------------- chain mode, lyrics
def test_chain_mode_asks_one_step_at_a_time(server, tmp_path):
    plan, meta = director(server, tmp_path, steps="chain", lyrics=True).plan("a1", CONCEPT, {})
    names = [b["response_format"]["json_schema"]["name"] for b in server.bodies]
    assert names == ["ConceptAnalysis", "Soundscape", "TrackList", "AlbumFrame", "AlbumPlan"]
    assert len(server.bodies[-1]["messages"]) == 10  # system + 5 user + 4 earlier answers
    assert meta["attempts"] == 5 and all(t.lyrics for t in plan.tracks)
    director(server, tmp_path, steps="chain", lyrics=True).plan("a1", CONCEPT, {})
    assert len(server.requests) == 5  # all five from the cache


def test_missing_lyrics_are_reasked(server):
    server.script.extend([reply_json(good_plan(lyrics=False)), reply_json(good_plan(lyrics=True))])
    plan, meta = director(server, lyrics=True).plan("a1", CONCEPT, {})
    assert meta["attempts"] == 2 and "track 1 has no lyrics" in meta["errors"][0]
    assert plan.tracks[0].lyrics.startswith("lamps on the water")


# ---------------------------------------------------------------- secrets
def test_the_key_never_leaks(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)

    def answer(body):
        if "doomed" in user_text(body):
            return status(400, f"invalid request (key {KEY} rejected)")  # a server that echoes it
        return good()

    with ScriptedOpenAI(script=[status(429, retry_after=0.01), status(500), hang(3)], default=answer) as srv:
        out = tmp_path / "out"
        planner = Planner(str(out), **plan_cfg(srv, tmp_path, response_format="json_schema", timeout_s=0.3))
        batch = planner(rows("a calm harbour", "a doomed concept"))
        assert batch["plan_error"][0] == "" and "HTTP 400" in batch["plan_error"][1]
        assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in srv.requests)  # it was used
    texts = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    assert len(texts) >= 3  # plan, failed plan, cache entry
    assert not [t for t in texts if KEY.encode() in t]
    assert KEY not in caplog.text and KEY not in "".join(batch["plan_error"])
    assert "***" in batch["plan_error"][1]


def test_other_400s_fail_the_album_without_downgrading(server):
    server.script.append(status(400, "This model's maximum context length is 8192 tokens"))
    with pytest.raises(DirectorError, match="refused the request: HTTP 400: This model's maximum context"):
        director(server).plan("a1", CONCEPT, {})
    director(server).plan("a2", CONCEPT, {})
    assert [b["response_format"]["type"] for b in server.bodies] == ["json_schema", "json_schema"]


# ---------------------------------------------------------------- the schema is the contract
from jsonschema import Draft202012Validator  # noqa: E402
from openai_server import minimal_answer, minimal_instance  # noqa: E402
from pydantic import BaseModel, Field, field_validator  # noqa: E402

from director import contract  # noqa: E402
from director.contract import (  # noqa: E402
    NOT_EXPRESSIBLE,
    STRICT_KEYWORDS,
    Ask,
    text_pattern,
    unstated,
    wire_schema,
)
from director.schema import TrackList  # noqa: E402
from director.steps import STEPS  # noqa: E402

STEP_MODELS = {s.name: s.answer for s in STEPS}
ASKS = [Ask(3, False, 4.0), Ask(3, True, 4.0), Ask(1, True, 30.0), Ask(30, False, 600.0)]


@pytest.mark.parametrize("steps", ["single", "chain"])
@pytest.mark.parametrize("lyrics", [False, True])
@pytest.mark.parametrize("inputs", [{}, {"track_count": "1"}, {"track_count": "5"}])
def test_minimal_answers_plan_every_album_on_the_first_answer(steps, lyrics, inputs):
    """A guided-decoding server at its most literal (the minimal JSON each schema allows,
    the same again when re-asked): every step is answered once, no re-ask."""
    with ScriptedOpenAI(default=minimal_answer) as srv:
        d = director(srv, steps=steps, lyrics=lyrics, max_attempts=2)
        for k in range(2):
            plan, meta = d.plan(f"a{k}", f"{CONCEPT} {k}", inputs)
            n_steps = 1 if steps == "single" else len(STEPS)
            assert meta["attempts"] == meta["requests"] == n_steps, meta["errors"]
            assert meta["errors"] == []
            assert len(plan.tracks) == int(inputs.get("track_count", 3))
            assert all((t.lyrics is not None) == lyrics for t in plan.tracks)
            assert all(t.music_prompt == f"a, {t.tempo_bpm} bpm" for t in plan.tracks)  # the tempo, composed
            assert plan.soundscape.instrumental is True
        for body in srv.bodies:
            rf = body["response_format"]
            assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True


def test_minimal_answers_when_the_server_refuses_json_schema():
    """Falling back to json_object: the schema still travels in the prompt, and the same
    minimal answers still plan on the first answer."""
    with ScriptedOpenAI(default=minimal_answer, reject_json_schema=True) as srv:
        plan, meta = director(srv, lyrics=True).plan("a1", CONCEPT, {})
        assert meta["attempts"] == 1 and meta["response_format"] == ["json_object"]
        assert [(b.get("response_format") or {}).get("type") for b in srv.bodies] == ["json_schema", "json_object"]


@pytest.mark.parametrize("step", [s.name for s in STEPS])
@pytest.mark.parametrize("ask", ASKS, ids=lambda a: f"{a.track_count}tracks-lyrics{a.lyrics}-{a.track_seconds:g}s")
def test_every_validator_rule_is_in_the_schema_or_listed(step, ask):
    """Snapshot of the contract, per step: every rule the validator holds (pydantic field
    rules, validator functions, plan checks) is stated by the schema sent, or listed in
    NOT_EXPRESSIBLE. A rule added without either fails here."""
    assert unstated(STEP_MODELS[step], ask) == []


def test_not_expressible_list_is_not_stale():
    ask = Ask(3, True, 4.0)
    rules = {name for m in STEP_MODELS.values() for name in contract.validator_rules(m)}
    for entry in NOT_EXPRESSIBLE:
        assert entry.name in rules, f"{entry.name} is listed as not expressible but no validator holds it"
        assert entry.why
    # the one cross-field rule is what still costs a re-ask
    assert [n.name for n in NOT_EXPRESSIBLE] == ["Soundscape._tempo_range"]
    assert contract.validator_rules(STEP_MODELS["soundscape"]).keys() >= {"Soundscape._tempo_range"}
    assert unstated(STEP_MODELS["refine"], ask) == []


def test_the_contract_check_fails_for_a_rule_without_its_schema_counterpart(monkeypatch):
    ask = Ask(3, False, 4.0)

    class Stricter(TrackList):  # a validator function: no schema states it
        @field_validator("tracks")
        @classmethod
        def _no_repeated_titles(cls, v):
            return v

    class Longer(BaseModel):  # a field rule the schema keeps: stated
        model_config = TrackList.model_config
        word: str = Field(min_length=2, max_length=9)
        count: int = Field(ge=1, le=4)

    assert unstated(Stricter, ask) == ["Stricter._no_repeated_titles"]
    assert unstated(Longer, ask) == []
    # a plan check with no schema statement
    extra = contract.Check("even_tracks", (TrackList,), lambda obj, a: [], None)
    monkeypatch.setattr(contract, "CHECKS", (*contract.CHECKS, extra))
    assert unstated(TrackList, ask) == ["check.even_tracks"]
    # a check whose statement the schema no longer makes (track count not pinned)
    monkeypatch.setattr(contract, "CHECKS", tuple(c._replace(stated=lambda rules, a: False)
                                                  if c.name == "track_count" else c for c in contract.CHECKS))
    assert unstated(TrackList, ask) == ["check.even_tracks", "check.track_count"]


def _walk(node, path="$"):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    for k, sub in enumerate(node.get("anyOf", [])):
        yield from _walk(sub, f"{path}|{k}")


@pytest.mark.parametrize("step", [s.name for s in STEPS])
@pytest.mark.parametrize("ask", ASKS[:3], ids=lambda a: f"{a.track_count}tracks-lyrics{a.lyrics}")
def test_wire_schema_meets_strict_mode_and_takes_minimal_and_good_answers(step, ask):
    schema = wire_schema(STEP_MODELS[step], ask)
    assert schema["type"] == "object"
    for path, node in _walk(schema):
        assert set(node) <= STRICT_KEYWORDS, (path, set(node) - STRICT_KEYWORDS)
        if node.get("type") == "object":
            assert node["additionalProperties"] is False, path
            assert node["required"] == list(node["properties"]), path
        if node.get("type") == "boolean" or "const" in node or len(node.get("enum", [None, None])) < 2:
            raise AssertionError(f"{path}: a field with one valid value (or a yes/no) is asked: {node}")
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    minimal = minimal_instance(schema)
    validator.validate(minimal)
    STEP_MODELS[step].model_validate(minimal)
    # a full good answer fits too (the schema is not stricter than a good model writes)
    good_answer = json.loads(minimal_answer({"response_format": {"json_schema": {"schema": schema}}})["content"])
    assert good_answer == minimal
    from openai_server import good_step

    good_ = good_step(STEP_MODELS[step].__name__, ask.track_count, ask.lyrics, ask.track_seconds)
    validator.validate(good_)
    # and the rules it states are real: breaking one is refused
    if "tracks" in schema["properties"]:
        assert not validator.is_valid({**minimal, "tracks": minimal["tracks"] * 2})
        track = minimal["tracks"][0]
        assert not validator.is_valid({**minimal, "tracks": [{**track, "tempo_bpm": 20}] * ask.track_count})
        assert not validator.is_valid({**minimal, "tracks": [{**track, "title": " padded "}] * ask.track_count})
        assert ("lyrics" in track) == ask.lyrics


def test_optional_fields_are_nullable_and_required_in_strict_mode():
    class Opt(BaseModel):
        name: str = Field(min_length=1, max_length=5)
        note: str | None = Field(default=None, max_length=10)
        tags: list[str] = Field(default_factory=list, max_length=2)

    schema = wire_schema(Opt, Ask(1, False, 1.0))
    assert schema["required"] == ["name", "note", "tags"]
    assert [b.get("type") for b in schema["properties"]["note"]["anyOf"]] == ["string", "null"]
    assert minimal_instance(schema) == {"name": "a", "note": None, "tags": []}


@pytest.mark.parametrize("lo,hi", [(1, 1), (1, 2), (1, 120), (0, 5), (2, 6), (3, 3), (1, None)])
def test_text_pattern_matches_exactly_the_strings_the_validator_keeps(lo, hi):
    import random

    rx = contract.py_regex(text_pattern(lo, hi))  # ECMA semantics: "$" is the end of the text
    rng = random.Random(lo * 100 + (hi or 0))
    samples = ["", " ", "a", " a", "a ", "a b", "\na", "ab", "a\nb", "abc", "  x  ", "x" * 7, "x y z",
               *("".join(rng.choice("ab \n\t") for _ in range(rng.randint(0, 10))) for _ in range(300))]
    for s in samples:
        keeps = s == s.strip() and lo <= len(s) and (hi is None or len(s) <= hi)
        assert bool(rx.search(s)) == keeps, (text_pattern(lo, hi), s)


# ---------------------------------------------------------------- offline names
HOSTILE_CONCEPTS = [
    "a harbour at night, ferries and sodium lamps",
    "the sum of all concepts for an album",
    "After the concept of the album",
    "<div class=\"concept\"><p>Album &amp; concept</p></div>",
    "<script>alert('the album')</script><b>sum</b>",
    "<img src=x onerror=alert(1)>&nbsp;&lt;&gt;&#169;&#x1F600;",
    "🎵🎶🌊🔥 ✨",
    "the",
    "of",
    "1234567890 42 2026",
    "https://www.example.com/album?id=3 &quot;concept&quot;",
    "<unclosed tag without end and the rest",
    ("lighthouse keepers " * 120)[:2000],  # the longest concept a concepts file may hold
    "<p>" + "storm " * 1000 + "</p>",
    "x" * 5000,
    "   \t\n  ",
    "A nocturne for the sleeping city, told through rain on tin roofs",
]


@pytest.mark.parametrize("concept", HOSTILE_CONCEPTS, ids=lambda c: c[:24])
def test_offline_titles_and_artists_say_something(concept):
    import re

    from albumforge.config import PlanConfig
    from director.offline import OfflineDirector

    d = OfflineDirector(PlanConfig(tracks_per_album=4, track_seconds=4.0))
    stop = d.stop
    forms = " ".join(d.vocab["title_forms"] + d.vocab["artist_forms"]).replace("{word}", " ").replace("{noun}", " ")
    fixed = {w.lower() for w in re.findall(r"[A-Za-z&]+", forms)}  # the forms' own words: "of", "the", "&", ...
    slot_words = {w.lower() for w in d.vocab["title_words"]}
    for seed in range(6):
        plan, _ = d.plan(f"album-{seed}", concept, {})
        for name in (plan.title, plan.artist, *(t.title for t in plan.tracks)):
            assert not re.search(r"[<>]|&\w+;|&#", name), name
            words = name.split()
            nouns = [w for w in words if w.lower() not in fixed and w.lower() not in slot_words]
            assert nouns or any(w.lower() in slot_words for w in words), name
            for w in nouns:  # the word taken from the concept
                assert w.isalpha() and w.lower() not in stop, f"{name!r} from {concept[:60]!r}"
            assert any(w.lower() not in stop and w.lower() not in fixed for w in words), name


def test_offline_names_take_the_concepts_words():
    from albumforge.config import PlanConfig
    from director.offline import OfflineDirector, name_words, plain_text

    d = OfflineDirector(PlanConfig())
    assert name_words("<b>Lighthouse</b> keepers &amp; the sum of a concept album", d.stop) == ["Lighthouse", "Keepers"]
    assert plain_text("<script>var album = 1;</script>Tides &nbsp;of<br/>glass") == "Tides of glass"
    plan, _ = d.plan("a1", "lighthouse keepers", {})
    assert "Lighthouse" in plan.title + plan.artist or "Keepers" in plan.title + plan.artist or any(
        "Lighthouse" in t.title or "Keepers" in t.title for t in plan.tracks)


@pytest.mark.parametrize("prompt,bpm,expected", [
    ("a", 30, "a, 30 bpm"),
    ("ambient dub techno, Rhodes piano", 92, "ambient dub techno, 92 bpm, Rhodes piano"),
    ("lofi hip hop at 85 BPM, piano", 70, "lofi hip hop, 70 bpm, piano"),
    ("120 bpm", 90, "90 bpm"),
])
def test_with_tempo_writes_one_tempo(prompt, bpm, expected):
    assert contract.with_tempo(prompt, bpm) == expected
    assert contract.with_tempo(expected, bpm) == expected  # idempotent
    assert len(contract.with_tempo("x," * 600, 240)) <= contract.MUSIC_PROMPT_MAX
