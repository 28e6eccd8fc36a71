"""Keep credentials out of everything the director writes: errors, logs, plans, caches."""

from __future__ import annotations

import os
import re

_SECRET_PATTERNS = [
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), "sk-***"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]+"), r"\1 ***"),
    (re.compile(r"(?i)(api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"), r"\1***"),
    (re.compile(r"(://)[^/@\s:]+:[^/@\s]+@"), r"\1***@"),  # user:password@ in URLs
]


def env_secrets() -> tuple[str, ...]:
    key = os.environ.get("OPENAI_API_KEY") or ""
    return (key,) if len(key) >= 4 else ()


def scrub(text: str, secrets: tuple[str, ...] | None = None) -> str:
    """``text`` with the given secrets (default: ``OPENAI_API_KEY``) and anything shaped
    like a key (sk-..., Bearer ..., api_key=..., user:password@ in a URL) replaced by ***."""
    text = str(text)
    for s in env_secrets() if secrets is None else secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def scrub_tree(value, secrets: tuple[str, ...] | None = None):
    """``scrub`` applied to every string in a JSON-like tree."""
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {k: scrub_tree(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_tree(v, secrets) for v in value]
    return value
