"""A scripted OpenAI-compatible server on loopback, for tests and the director benchmark.

It speaks ``POST /v1/chat/completions`` (with ``usage`` tokens and error status codes)
from the standard library's ``http.server`` in a thread. Each request takes the next
action of the script; when the script is empty, ``default`` answers (by default: a valid
answer for whatever the request asks, see ``good_answer``).

    with ScriptedOpenAI([reply("not json"), status(429, retry_after=0.01), good()]) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="x")

Actions: ``reply(text)``, ``reply_json(obj)``, ``status(code, ...)``, ``hang(seconds)``,
``good()``, or any callable(body) returning one of those.

``ScriptedOpenAI(default=minimal_answer)`` is a guided-decoding server at its most
literal: every answer is the *minimal* JSON that the request's schema allows
(``minimal_instance``: the first enum value, ``false``, the lowest number, the fewest
items, the shortest strings), and the same answer again when re-asked. A director whose
schema states its rules plans every album on the first answer; one whose validator asks
for more than the schema says fails every album.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


# ---------------------------------------------------------------- actions
def reply(content: str, finish_reason: str = "stop") -> dict:
    return {"kind": "reply", "content": content, "finish_reason": finish_reason}


def reply_json(obj) -> dict:
    return reply(json.dumps(obj))


def status(code: int, message: str = "scripted error", retry_after: float | None = None) -> dict:
    return {"kind": "status", "code": code, "message": message, "retry_after": retry_after}


def hang(seconds: float) -> dict:
    """Accept the request and answer nothing for ``seconds`` (then drop the connection)."""
    return {"kind": "hang", "seconds": seconds}


def good() -> dict:
    return {"kind": "good"}


# ---------------------------------------------------------------- valid answers
def good_plan(n_tracks: int = 3, lyrics: bool = False, seconds: float = 4.0, tag: str = "") -> dict:
    return {
        "title": f"Harbour Lights{tag}",
        "artist": "The Quiet Cartographers",
        "liner_notes": "Night ferries, sodium lamps and the hum of the dock, in eight slow movements.",
        "soundscape": {
            "genres": ["ambient", "dub techno"],
            "instruments": ["Rhodes piano", "analog pads", "upright bass", "brushed drums"],
            "tempo_min_bpm": 70, "tempo_max_bpm": 96,
            "production": "warm tape saturation, long plate reverb",
            "cultural_elements": [],
        },
        "cover_prompt": "a lit ferry crossing a dark harbour, long exposure, teal and amber, no text",
        "tracks": [
            {"title": f"Pier {k}", "duration_s": seconds, "tempo_bpm": 70 + 3 * k,
             "music_prompt": "ambient dub techno, Rhodes piano, upright bass, "
                             "nocturnal mood, tape warmth, instrumental, no vocals",
             "visual_prompt": f"harbour at night, pier {k}, sodium light, fog, teal and amber, film photo",
             **({"lyrics": f"lamps on the water / line {k}"} if lyrics else {})}
            for k in range(1, n_tracks + 1)
        ],
    }


def good_step(name: str, n_tracks: int = 3, lyrics: bool = False, seconds: float = 4.0) -> dict:
    plan = good_plan(n_tracks, lyrics, seconds)
    if name == "ConceptAnalysis":
        return {"summary": "a harbour at night", "themes": ["travel"], "moods": ["calm"],
                "setting": "a port city", "imagery": ["ferries", "lamps"]}
    if name == "Soundscape":
        return plan["soundscape"]
    if name == "TrackList":
        return {"tracks": plan["tracks"]}
    if name == "AlbumFrame":
        return {k: plan[k] for k in ("title", "artist", "liner_notes", "cover_prompt")}
    return plan


def asked_for(body: dict) -> tuple[str, int, bool]:
    """(answer name, track count, lyrics?) that a director request asks for."""
    text = "\n".join(str(m.get("content") or "") for m in body.get("messages", []))
    last = str(body.get("messages", [{}])[-1].get("content") or "")
    rf = body.get("response_format") or {}
    name = (rf.get("json_schema") or {}).get("name")
    if not name:
        m = re.search(r"the (\w+), and nothing else", last) or re.search(r"\((\w+)\) and nothing else", last)
        name = m.group(1) if m else "AlbumPlan"
    counts = re.findall(r"exactly (\d+) tracks", text)
    return name, int(counts[-1]) if counts else 3, "- lyrics: a short lyric" in text


def good_answer(body: dict) -> dict:
    name, n, lyrics = asked_for(body)
    return reply_json(good_step(name, n, lyrics))


# ---------------------------------------------------------------- minimal answers
_SHORT_STRINGS = ("", *("a" * k for k in range(1, 9)), *("0" * k for k in range(1, 9)),
                  *("a0" * k for k in range(1, 5)), " ", "a a", "0 a")


def _shortest_string(node: dict) -> str:
    lo, hi = int(node.get("minLength", 0)), node.get("maxLength")
    pattern = node.get("pattern")
    if "format" in node:
        raise ValueError(f"minimal_instance: string format {node['format']!r} is not supported")
    cands = sorted({*_SHORT_STRINGS, "a" * lo, "0" * lo}, key=lambda c: (len(c), c != "a" * len(c)))
    for cand in cands:
        if len(cand) < lo or (hi is not None and len(cand) > int(hi)):
            continue
        if pattern is not None and re.search(pattern, cand) is None:  # JSON Schema: unanchored
            continue
        return cand
    raise ValueError(f"minimal_instance: no short string meets {node}")


def _lowest_number(node: dict, integer: bool):
    if "multipleOf" in node:
        raise ValueError("minimal_instance: multipleOf is not supported")
    hi = node.get("maximum", node.get("exclusiveMaximum"))
    if "minimum" in node:
        value = node["minimum"]
    elif "exclusiveMinimum" in node:
        ex = node["exclusiveMinimum"]
        step = 1 if integer or hi is None else min(1, (hi - ex) / 2)
        value = (int(ex) + 1) if integer else ex + step
    else:
        value = 0 if hi is None or hi > 0 else hi - (0 if "maximum" in node else 1)
    return int(value) if integer else value


def minimal_instance(node: dict):
    """The smallest JSON value that ``node`` (a JSON schema, refs inlined) allows: null where
    allowed, the first enum value, ``false``, the lowest number, the fewest items, the
    shortest string meeting minLength/maxLength/pattern, only the required properties."""
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return node["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in node:
            branches = node[key]
            nulls = [b for b in branches if b.get("type") == "null"]
            return minimal_instance(nulls[0] if nulls else branches[0])
    kind = node.get("type")
    if isinstance(kind, list):
        kind = "null" if "null" in kind else kind[0]
    if kind == "null":
        return None
    if kind == "boolean":
        return False
    if kind in ("integer", "number"):
        return _lowest_number(node, kind == "integer")
    if kind == "string":
        return _shortest_string(node)
    if kind == "array":
        return [minimal_instance(node.get("items", {})) for _ in range(int(node.get("minItems", 0)))]
    if kind == "object" or "properties" in node:
        props = node.get("properties", {})
        return {name: minimal_instance(props[name]) for name in node.get("required", []) if name in props}
    raise ValueError(f"minimal_instance: cannot make a value for {node}")


def request_schema(body: dict) -> dict | None:
    """The JSON schema a request asks for: its response_format, else the schema written in
    the last user message (json_object and plain-text requests carry it there)."""
    rf = body.get("response_format") or {}
    schema = (rf.get("json_schema") or {}).get("schema")
    if schema is not None:
        return schema
    last = str(body.get("messages", [{}])[-1].get("content") or "")
    for msg in reversed(body.get("messages", [])):
        if msg.get("role") == "user" and "JSON schema:" in str(msg.get("content")):
            last = str(msg["content"])
            break
    if "JSON schema:" not in last:
        return None
    try:
        schema, _ = json.JSONDecoder().raw_decode(last.split("JSON schema:", 1)[1].lstrip())
        return schema
    except json.JSONDecodeError:
        return None


def minimal_answer(body: dict) -> dict:
    """The minimal schema-conformant answer to a request (``status(400)`` when it has no schema)."""
    schema = request_schema(body)
    if schema is None:
        return status(400, "minimal server: the request carries no JSON schema")
    return reply_json(minimal_instance(schema))


# ---------------------------------------------------------------- the server
class ScriptedOpenAI:
    def __init__(self, script=(), default=good_answer, latency_s: float = 0.0, reject_json_schema: bool = False,
                 api_key: str | None = None, latency_jitter_s: float = 0.0):
        self.script = deque(script)
        self.default = default
        self.latency_s = latency_s  # every answer waits this long (plus up to latency_jitter_s)
        self.latency_jitter_s = latency_jitter_s
        self.reject_json_schema = reject_json_schema
        self.api_key = api_key  # when set, other keys get 401
        self.requests: list[dict] = []  # {"body", "headers" (lower-case names), "t"} per request, in arrival order
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None

    # the script ---------------------------------------------------------------
    def _next_action(self, body: dict) -> dict:
        with self._lock:
            action = self.script.popleft() if self.script else None
        action = action or self.default
        while callable(action):
            action = action(body)
        if action.get("kind") == "good":
            action = good_answer(body)
        return action

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return self._send(handler, 400, {"error": {"message": "body is not JSON"}})
        with self._lock:
            self.requests.append({"body": body, "headers": {k.lower(): v for k, v in handler.headers.items()},
                                  "t": time.monotonic()})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if handler.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                return self._send(handler, 404, {"error": {"message": f"no route {handler.path}"}})
            if self.api_key and handler.headers.get("authorization") != f"Bearer {self.api_key}":
                return self._send(handler, 401, {"error": {"message": "Incorrect API key provided",
                                                           "type": "invalid_request_error"}})
            if self.latency_s or self.latency_jitter_s:
                self._stop.wait(self.latency_s + random.uniform(0, self.latency_jitter_s))
            if self.reject_json_schema and (body.get("response_format") or {}).get("type") == "json_schema":
                return self._send(handler, 400, {"error": {"message": "response_format json_schema is not supported",
                                                           "type": "invalid_request_error"}})
            action = self._next_action(body)
            kind = action["kind"]
            if kind == "hang":
                self._stop.wait(action["seconds"])
                handler.close_connection = True
                return None
            if kind == "status":
                headers = {"retry-after": str(action["retry_after"])} if action.get("retry_after") is not None else {}
                return self._send(handler, action["code"], {"error": {"message": action["message"],
                                                                      "type": "server_error"}}, headers)
            content = action["content"]
            prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
            tokens_in, tokens_out = max(1, prompt_chars // 4), max(1, len(content) // 4)
            return self._send(handler, 200, {
                "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "scripted"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": action.get("finish_reason", "stop")}],
                "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                          "total_tokens": tokens_in + tokens_out},
            })
        finally:
            with self._lock:
                self.in_flight -= 1

    @staticmethod
    def _send(handler, code: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            handler.send_response(code)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                handler.send_header(k, v)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            handler.close_connection = True

    # lifecycle ----------------------------------------------------------------
    def start(self) -> "ScriptedOpenAI":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                server._handle(self)

            def log_message(self, *args):  # quiet
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes hanging and slow answers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "ScriptedOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def bodies(self) -> list[dict]:
        return [r["body"] for r in self.requests]
