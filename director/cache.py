"""The director's answer cache: one JSON file per request, keyed by a hash of
(model, messages, params), so a re-run never pays twice for the same question.

Files live under ``OUT/cache/director/<hh>/<hash>.json`` (a local folder or object
storage) and are written whole or not at all, so a crash leaves no half entry. No server address and no
key is part of a key or an entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from albumforge.storage import as_store

log = logging.getLogger(__name__)


def cache_key(model: str, messages: list[dict], params: dict) -> str:
    blob = json.dumps({"model": model, "messages": messages, "params": params},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class AnswerCache:
    """``folder``: a local folder or an object storage URL (``albumforge.storage``)."""

    def __init__(self, folder: Path | str):
        self.store = as_store(folder)

    @staticmethod
    def rel(key: str) -> str:
        return f"{key[:2]}/{key}.json"

    def path(self, key: str) -> Path:
        """The entry's local file (a local cache only)."""
        return self.store.local_path(self.rel(key))

    def get(self, key: str) -> dict | None:
        try:
            entry = json.loads(self.store.read_bytes(self.rel(key)))
            return entry["answer"] if entry.get("key") == key else None
        except FileNotFoundError:
            return None
        except Exception as e:  # a corrupt entry is a miss, never a failure
            log.warning("director cache entry %s unusable (%s): asking again", key[:12], e)
            return None

    def put(self, key: str, model: str, answer: dict) -> None:
        self.store.write_text(self.rel(key), json.dumps({"key": key, "model": model, "answer": answer},
                                                        ensure_ascii=False))

    def drop(self, key: str) -> None:
        self.store.delete(self.rel(key))
