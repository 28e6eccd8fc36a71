"""The director's answer cache: one JSON file per request, keyed by a hash of
(model, messages, params), so a re-run never pays twice for the same question.

Files live under ``OUT/cache/director/<hh>/<hash>.json`` and are written whole or not at
all (temp file, then rename), so a crash leaves no half entry. No server address and no
key is part of a key or an entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def cache_key(model: str, messages: list[dict], params: dict) -> str:
    blob = json.dumps({"model": model, "messages": messages, "params": params},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class AnswerCache:
    def __init__(self, folder: Path | str):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            entry = json.loads(self.path(key).read_text())
            return entry["answer"] if entry.get("key") == key else None
        except FileNotFoundError:
            return None
        except Exception as e:  # a corrupt entry is a miss, never a failure
            log.warning("director cache entry %s unusable (%s): asking again", key[:12], e)
            return None

    def put(self, key: str, model: str, answer: dict) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"key": key, "model": model, "answer": answer}, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def drop(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
