"""The LLM director: any OpenAI-compatible server plans albums through the ``openai`` client.

One ``plan()`` call, in steps:

  1. render the step templates for the row (``director.steps``)
  2. ask: look the question up in the answer cache, else send it (through the shared
     ``RequestGate``: at most ``concurrency`` requests in flight, an optional request
     rate, and a shared pause after a 429), retrying 429 / 5xx / timeouts / connection
     errors with exponential backoff and jitter, up to ``max_retries``
  3. parse the answer (plain JSON, JSON in a code fence, or JSON inside prose) into the
     step's pydantic model, write in what the director owns (each track's ``tempo_bpm``
     into its music prompt as "N bpm", ``instrumental``) and run the plan checks
     (``director.contract.CHECKS``: track count, a tempo per track, lyrics when asked);
     a bad answer is re-asked with the error shown, up to ``max_attempts`` answers
  4. return the AlbumPlan and its accounting (model, prompts, raw answers, tokens,
     attempts, requests, cache hits, seconds)

JSON is asked for with a JSON-schema ``response_format`` in strict mode, the schema built
per request by ``director.contract.wire_schema`` so that it states every rule a schema
can state (a guided-decoding server answers a usable plan the first time; only the rules
in ``director.contract.NOT_EXPRESSIBLE`` can still cost a re-ask); a server that rejects it (400
or 422 naming the format) is asked with ``json_object``, then with plain instructions
only, and the fallback is remembered per server and model for the life of the process.

The API key is read from ``OPENAI_API_KEY`` (the server from ``OPENAI_BASE_URL``) and
never written anywhere: every text that leaves this module (errors, logs, meta) passes
``scrub``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import openai
from pydantic import BaseModel, ValidationError

from director.cache import AnswerCache, cache_key
from director.contract import Ask, finish_answer, problems
from director.redact import env_secrets, scrub, scrub_tree
from director.schema import AlbumPlan
from director.steps import STEPS, PromptBuilder, Step

if TYPE_CHECKING:  # the section type only: director/ does not import the driver
    from albumforge.config import PlanConfig

log = logging.getLogger(__name__)

FORMATS = ("json_schema", "json_object", "text")  # the auto fallback order
_RETRY_STATUS = {408, 409, 429}
_FATAL_STATUS = {401, 403, 404}  # no album can succeed: later plans fail without a request
_server_formats: dict[tuple[str, str], str] = {}  # (server, model) -> format that works
_server_formats_lock = threading.Lock()


class DirectorError(RuntimeError):
    """A plan that could not be made; ``meta`` holds the accounting up to the failure."""

    def __init__(self, message: str, meta: dict | None = None):
        super().__init__(message)
        self.meta = meta or {}


class AnswerError(ValueError):
    """An answer that is not usable JSON or breaks a plan rule."""


# ---------------------------------------------------------------- answers
_FENCE = re.compile(r"```[A-Za-z]*\s*\n?(.*?)```", re.DOTALL)


def extract_json(text: str, model: type[BaseModel] | None = None) -> dict:
    """The JSON object in an answer: the whole text, a fenced block, or the first object
    inside prose. A lone wrapper key ({"AlbumPlan": {...}}) around the object is removed."""
    text = (text or "").strip()
    if not text:
        raise AnswerError("the answer is empty")
    first_error = None
    candidates = [text, *(m.strip() for m in _FENCE.findall(text))]
    for cand in candidates:
        try:
            data = json.loads(cand)
        except json.JSONDecodeError as e:
            first_error = first_error or e
            continue
        if isinstance(data, dict):
            return _unwrap(data, model)
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            data, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data:
            return _unwrap(data, model)
    if "{" not in text:
        raise AnswerError(f"the answer holds no JSON object (it begins {text[:80]!r})")
    if first_error is not None:
        raise AnswerError(f"the answer is not valid JSON ({first_error.msg} at line {first_error.lineno} "
                          f"column {first_error.colno})")
    raise AnswerError("the answer holds no JSON object")


def _unwrap(data: dict, model: type[BaseModel] | None) -> dict:
    if model is not None and len(data) == 1:
        (key, inner), = data.items()
        if isinstance(inner, dict) and key not in model.model_fields:
            return inner
    return data


def describe_validation(e: ValidationError, limit: int = 12) -> str:
    parts = []
    for err in e.errors()[:limit]:
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        value = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(value, (dict, list)) else f" (got {value!r:.60})"
        parts.append(f"{loc}: {err['msg']}{shown}")
    more = e.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


# ---------------------------------------------------------------- rate control
class RequestGate:
    """At most ``concurrency`` requests in flight, at most ``per_minute`` started a minute,
    and a shared pause after a 429 so that every thread backs off together."""

    def __init__(self, concurrency: int, per_minute: float | None = None):
        self._slots = threading.BoundedSemaphore(max(1, int(concurrency)))
        self._lock = threading.Lock()
        self._interval = 60.0 / per_minute if per_minute else 0.0
        self._next_start = 0.0
        self._pause_until = 0.0

    @contextmanager
    def slot(self):
        self._slots.acquire()
        try:
            while True:
                with self._lock:
                    now = time.monotonic()
                    wait = max(self._pause_until, self._next_start) - now
                    if wait <= 0:
                        self._next_start = max(self._next_start, now) + self._interval
                        break
                time.sleep(min(wait, 1.0))
            yield
        finally:
            self._slots.release()

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._pause_until = max(self._pause_until, time.monotonic() + seconds)


class _Run:
    """The accounting of one plan() call."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.transcript: list[dict] = []
        self.answers: list[str] = []
        self.errors: list[str] = []
        self.formats: list[str] = []
        self.tokens_in = self.tokens_out = 0
        self.requests = self.retries = self.cached = 0


# ---------------------------------------------------------------- the director
class LLMDirector:
    name = "openai"

    def __init__(self, plan: "PlanConfig", cache_dir: str | Path | None = None, base_url: str | None = None,
                 api_key: str | None = None):
        """``plan``: the run's plan section (``albumforge.config.PlanConfig``: model, limits,
        retries, steps, format); the server and key come from the arguments or the
        environment (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``), never from config."""
        model, response_format = plan.director_model, plan.response_format
        if response_format not in ("auto", *FORMATS):
            raise ValueError(f"response_format={response_format!r}: expected 'auto' or one of {FORMATS}")
        self.model = model
        self.timeout_s = float(plan.timeout_s)
        self.max_attempts = int(plan.max_attempts)
        self.max_retries = int(plan.max_retries)
        self.backoff_s, self.backoff_max_s = float(plan.retry_backoff_s), float(plan.retry_backoff_max_s)
        self.response_format = response_format
        self.temperature, self.max_tokens = plan.temperature, plan.max_tokens
        self.track_seconds = float(plan.track_seconds)
        self.lyrics = bool(plan.lyrics)
        self.prompts = PromptBuilder(plan.prompts_dir, plan.steps, plan.tracks_per_album, plan.track_seconds,
                                     plan.lyrics)
        self.cache = AnswerCache(cache_dir) if cache_dir else None
        self.gate = RequestGate(plan.concurrency, plan.requests_per_minute)
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"  # local servers take any key
        self._secrets = tuple(s for s in {key, *env_secrets()} if s != "EMPTY" and len(s) >= 4)
        # our own retry loop (bounds and backoff from PlanConfig, shared 429 pause), so
        # the client's is off; the timeout is per request
        self._client = openai.OpenAI(base_url=base_url, api_key=key, timeout=self.timeout_s, max_retries=0)
        self.server = scrub(str(self._client.base_url).rstrip("/"), self._secrets)
        self._fatal: str | None = None

    def __repr__(self) -> str:  # never shows the client (it holds the key)
        return f"LLMDirector(model={self.model!r}, server={self.server!r})"

    # 1. plan ----------------------------------------------------------------
    def plan(self, album_id: str, concept: str, inputs: dict) -> tuple[AlbumPlan, dict]:
        run = _Run()
        try:
            if self._fatal:
                raise DirectorError(f"not asked: {self._fatal}")
            v = self.prompts.variables(concept, inputs)
            system = self.prompts.system(v)
            if self.prompts.mode == "single":
                conv = [system, self.prompts.single_message(v)]
                run.transcript += conv
                plan, _ = self._ask(conv, AlbumPlan, None, v, run)
            else:
                conv = [system]
                run.transcript.append(system)
                for step in STEPS:
                    msg = self.prompts.step_message(v, step)
                    conv.append(msg)
                    run.transcript.append(msg)
                    plan, text = self._ask(conv, step.answer, step, v, run)
                    conv.append({"role": "assistant", "content": text})
        except DirectorError as e:
            raise DirectorError(scrub(str(e), self._secrets), self._meta(run)) from None
        return self._finish(plan), self._meta(run)

    def _meta(self, run: _Run) -> dict:
        meta = dict(
            director=self.name, model=self.model, server=self.server, steps=self.prompts.mode,
            response_format=sorted(set(run.formats)), attempts=len(run.answers),
            requests=run.requests, retries=run.retries, cached=run.cached,
            tokens_in=run.tokens_in, tokens_out=run.tokens_out,
            seconds=time.perf_counter() - run.t0, errors=run.errors,
            messages=run.transcript, answers=run.answers,
        )
        return scrub_tree(meta, self._secrets)

    def _finish(self, plan: AlbumPlan) -> AlbumPlan:
        """Durations within 0.5..1.5x the asked length (GPU time is budgeted from it);
        lyrics dropped when not asked for; instrumental (MusicGen makes no vocals)."""
        lo, hi = Ask(len(plan.tracks), self.lyrics, self.track_seconds).duration_range
        plan.soundscape.instrumental = True
        for t in plan.tracks:
            t.duration_s = float(min(max(t.duration_s, lo), hi))
            if not self.lyrics:
                t.lyrics = None
        return AlbumPlan.model_validate(plan.model_dump())

    # 2. ask until an answer is valid ------------------------------------------
    def _ask(self, conv: list[dict], model: type[BaseModel], step: Step | None, variables: dict, run: _Run):
        conv = list(conv)
        name = model.__name__
        schema = self.prompts.schema(variables, step)
        ask = self.prompts.ask(variables)
        keys, error = [], ""
        for attempt in range(1, self.max_attempts + 1):
            answer, key = self._answer(conv, name, schema, run)
            keys.append(key)
            text = answer.get("content") or ""
            run.answers.append(text)
            run.transcript.append({"role": "assistant", "content": text})
            try:
                obj = finish_answer(model.model_validate(extract_json(text, model)))
                found = problems(obj, ask)
                if found:
                    raise AnswerError("; ".join(found))
                return obj, text
            except ValidationError as e:
                error = f"the JSON does not match the {name} schema: {describe_validation(e)}"
            except AnswerError as e:
                error = str(e)
            if answer.get("finish_reason") == "length":
                error += " (the answer was cut off at the token limit: keep it shorter)"
            run.errors.append(f"{step.name if step else 'plan'} answer {attempt}: {error}"[:1000])
            if attempt < self.max_attempts:
                reask = {"role": "user", "content": self.prompts.reask(variables, error, name)}
                conv += [{"role": "assistant", "content": text}, reask]
                run.transcript.append(reask)
        if self.cache is not None:  # a retry of this album asks afresh instead of replaying
            for key in keys:
                self.cache.drop(key)
        raise DirectorError(f"no valid {name} in {self.max_attempts} answers from {self.model}: {error}"[:1500])

    # 3. one answer: from the cache, else from the server -----------------------
    def _answer(self, conv: list[dict], name: str, schema: dict, run: _Run) -> tuple[dict, str]:
        params = {"temperature": self.temperature, "max_tokens": self.max_tokens,
                  "response_format": self.response_format, "answer": name, "schema": schema}
        key = cache_key(self.model, conv, params)
        answer = self.cache.get(key) if self.cache is not None else None
        if answer is not None:
            run.cached += 1
        else:
            answer = self._request(conv, name, schema, run)
            if self.cache is not None:
                self.cache.put(key, self.model, answer)
        run.tokens_in += int(answer.get("tokens_in") or 0)
        run.tokens_out += int(answer.get("tokens_out") or 0)
        run.formats.append(answer.get("format") or "?")
        return answer, key

    def _format(self) -> str:
        if self.response_format != "auto":
            return self.response_format
        with _server_formats_lock:
            return _server_formats.get((self.server, self.model), FORMATS[0])

    def _downgrade(self, fmt: str, reason: str) -> None:
        nxt = FORMATS[FORMATS.index(fmt) + 1]
        with _server_formats_lock:
            current = _server_formats.get((self.server, self.model), FORMATS[0])
            if FORMATS.index(current) <= FORMATS.index(fmt):
                _server_formats[(self.server, self.model)] = nxt
                log.warning("director: %s refused response_format %s (%s): using %s from now on",
                            self.server, fmt, reason, nxt)

    def _request(self, conv: list[dict], name: str, schema: dict, run: _Run) -> dict:
        failures = 0
        while True:
            fmt = self._format()
            kwargs: dict = {"model": self.model, "messages": conv}
            if self.temperature is not None:
                kwargs["temperature"] = self.temperature
            if self.max_tokens:
                kwargs["max_tokens"] = self.max_tokens
            if fmt == "json_schema":
                kwargs["response_format"] = {"type": "json_schema",
                                             "json_schema": {"name": name, "schema": schema, "strict": True}}
            elif fmt == "json_object":
                kwargs["response_format"] = {"type": "json_object"}
            t0 = time.perf_counter()
            try:
                with self.gate.slot():
                    run.requests += 1
                    resp = self._client.chat.completions.create(**kwargs)
            except openai.APIStatusError as e:
                reason = self._describe(e)
                status = e.status_code
                if (status in (400, 422) and self.response_format == "auto" and fmt != FORMATS[-1]
                        and _about_format(e)):
                    self._downgrade(fmt, reason)
                    continue
                if status in _RETRY_STATUS or status >= 500:
                    failures += 1
                    self._backoff(failures, reason, run, _retry_after(e), rate_limited=status == 429)
                    continue
                if status in _FATAL_STATUS:
                    self._fatal = f"{self.server} answered {reason}"
                raise DirectorError(f"{self.server} refused the request: {reason}") from None
            except (openai.APITimeoutError, openai.APIConnectionError) as e:
                failures += 1
                self._backoff(failures, self._describe(e), run, None, rate_limited=False)
                continue
            choice = resp.choices[0] if resp.choices else None
            usage = resp.usage
            return {
                "content": (choice.message.content if choice and choice.message else None) or "",
                "finish_reason": choice.finish_reason if choice else None,
                "tokens_in": int(getattr(usage, "prompt_tokens", 0) or 0),
                "tokens_out": int(getattr(usage, "completion_tokens", 0) or 0),
                "format": fmt,
                "seconds": round(time.perf_counter() - t0, 4),
                "served_by": getattr(resp, "model", None),
            }

    def _backoff(self, failures: int, reason: str, run: _Run, retry_after: float | None, rate_limited: bool) -> None:
        run.errors.append(reason)
        if failures > self.max_retries:
            raise DirectorError(f"{reason}; gave up after {failures} tries ({self.server})")
        run.retries += 1
        if retry_after is not None:
            delay = min(self.backoff_max_s, retry_after)
        else:
            delay = min(self.backoff_max_s, self.backoff_s * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
        if rate_limited:
            self.gate.pause(delay)  # every thread waits, not just this one
        log.info("director: %s; retry %d of %d in %.2f s", reason, failures, self.max_retries, delay)
        time.sleep(delay)

    def _describe(self, e: Exception) -> str:
        if isinstance(e, openai.APITimeoutError):
            text = f"request timed out after {self.timeout_s:g} s"
        elif isinstance(e, openai.APIConnectionError):
            cause = e.__cause__ or e.__context__
            text = f"connection error ({type(cause).__name__ if cause else 'unknown'})"
        elif isinstance(e, openai.APIStatusError):
            body = e.body
            if isinstance(body, dict):
                body = body.get("error", body)
                body = body.get("message", body) if isinstance(body, dict) else body
            text = f"HTTP {e.status_code}: {str(body)[:300] if body is not None else e.message[:300]}"
        else:
            text = f"{type(e).__name__}: {e}"
        return scrub(text, self._secrets)


def _retry_after(e: openai.APIStatusError) -> float | None:
    try:
        value = e.response.headers.get("retry-after")
        return max(0.0, float(value)) if value is not None else None
    except (AttributeError, ValueError):
        return None


def _about_format(e: openai.APIStatusError) -> bool:
    """Whether a 400/422 refuses the response_format (not, say, an over-long prompt)."""
    text = f"{e.body} {e.message}".lower() if e.body is not None else ""
    return not text.strip() or any(w in text for w in ("response_format", "json_schema", "json_object",
                                                         "schema", "format", "grammar", "guided"))


def forget_server_formats() -> None:
    """Forget which servers refused JSON-schema answers (tests; a server that changed)."""
    with _server_formats_lock:
        _server_formats.clear()
