"""The preflight: every model a run loads is on this machine before Ray starts, and
`albumforge models fetch|list` (the driver's side of ``albumforge.models``, which finds and
fetches; the tiny engine's models are built here first, ``actors.tiny``).
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

from albumforge.models import (
    BUILT,
    MISSING,
    TINY,
    Found,
    HubUnreachable,
    disk_size,
    fetch,
    find,
    hub_cache,
    hub_endpoint,
    hub_offline,
    human,
    needs,
    precision_of,
    remote_size,
)

log = logging.getLogger("albumforge")


def _find(need, tiny_cache) -> Found:
    """``albumforge.models.find``; a tiny model is built here (once, into ``tiny_cache``)."""
    if need.form == TINY:
        from actors.tiny import ensure_tiny  # the tiny engine needs torch anyway

        path = ensure_tiny(need.ref, Path(tiny_cache))
        return Found(need, BUILT, str(path), disk_size(path))
    return find(need, tiny_cache)


# ---------------------------------------------------------------- preflight
def resolve_all(cfg, parts=("music", "image", "plan"), fetch_missing: bool = False, precision: str = "auto",
                say=print) -> list[Found]:
    """Find every need; with ``fetch_missing``, fetch the missing HF ids while the hub answers."""
    found = [_find(n, cfg.tiny_cache) for n in needs(cfg, parts)]
    if not fetch_missing or hub_offline():
        return found
    prec = precision_of(cfg, precision)
    for k, f in enumerate(found):
        if f.ok or not f.fetchable:
            continue
        try:
            found[k] = fetch(f.need, prec, say)
        except HubUnreachable as e:
            say(f"albumforge: cannot fetch: {e}")
            for j in range(k, len(found)):
                if not found[j].ok and found[j].fetchable:
                    found[j].why += " (hub unreachable)"
            break
    return found


def missing_report(found: list[Found], command: str | None) -> str:
    missing = [f for f in found if not f.ok]
    width = max(len(f.need.field) for f in missing)
    refw = max(len(f.need.ref) for f in missing)
    offline = " HF_HUB_OFFLINE=1," if hub_offline() else ""
    lines = [f"albumforge: {len(missing)} model(s) this run loads are not here "
             f"(Hugging Face cache {hub_cache()},{offline} hub {hub_endpoint()}):"]
    for f in missing:
        size = human(f.size) if f.size is not None else (
            ("size unknown offline" if hub_offline() else "size unknown") if f.fetchable else "")
        lines.append(f"  {f.need.field:<{width}}  {f.need.ref:<{refw}}  {f.why}" + (f"; {size}" if size else ""))
    if command and any(f.fetchable for f in missing):
        lines.append("fetch them once where the hub is reachable, into the HF_HOME every node reads:")
        lines.append(f"  {command}")
    lines.append("nothing was started" if command else "the rest is in the cache; fix these and fetch again")
    return "\n".join(lines)


def preflight(cfg, command: str, parts=("music", "image", "plan"), say=None) -> int:
    """0 when every model the run loads is here (fetching the missing ones now when the hub
    is reachable); else the missing-models message on stderr and 2. Call before Ray starts."""
    say = say or (lambda line: print(line, file=sys.stderr))
    found = resolve_all(cfg, parts, fetch_missing=True, say=say)
    if all(f.ok for f in found):
        log.info("models: %s", ", ".join(f"{f.need.field} {f.state}" for f in found))
        return 0
    print(missing_report(found, command), file=sys.stderr)
    return 2


def fetch_command(argv: list[str], prefix: str = "albumforge models fetch") -> str:
    return " ".join([prefix, *map(shlex.quote, argv)]).strip()


# ---------------------------------------------------------------- `albumforge models fetch|list`
def list_models(cfg, precision: str = "auto", parts=("music", "image", "plan")) -> int:
    """What the cache holds for this config and what is missing (with sizes when the hub answers)."""
    found = resolve_all(cfg, parts)
    prec = precision_of(cfg, precision)
    on_disk = _cache_sizes()
    print(f"Hugging Face cache: {hub_cache()} (hub {hub_endpoint()}{', HF_HUB_OFFLINE=1' if hub_offline() else ''})")
    width = max(len(f.need.field) for f in found)
    refw = max(len(f.need.ref) for f in found)
    hub_answers = True
    for f in found:
        if f.ok:
            repo = on_disk.get(f.need.ref)
            extra = f"{human(f.size)}" + (f" ({human(repo)} for the whole repo in the cache)" if repo else "")
            print(f"  {f.need.field:<{width}}  {f.need.ref:<{refw}}  {f.state:<7}  {extra}  {f.path}")
        else:
            size = None
            if f.fetchable and hub_answers:
                try:
                    size = remote_size(f.need, prec)
                except HubUnreachable:
                    hub_answers = False
            fetch_note = f"; fetch: {human(size)}" if size is not None else ""
            print(f"  {f.need.field:<{width}}  {f.need.ref:<{refw}}  {MISSING:<7}  {f.why}{fetch_note}")
    missing = [f for f in found if not f.ok]
    print(f"{len(found) - len(missing)} of {len(found)} here" + (f", {len(missing)} missing" if missing else ""))
    return 2 if missing else 0


def _cache_sizes() -> dict[str, int]:
    try:
        from huggingface_hub import scan_cache_dir

        return {r.repo_id: r.size_on_disk for r in scan_cache_dir(hub_cache()).repos if r.repo_type == "model"}
    except Exception:  # no cache yet
        return {}


def fetch_models(cfg, precision: str = "auto", parts=("music", "image", "plan")) -> int:
    """Download every missing model of this config; 0 when all are here afterwards."""
    if hub_offline():
        print("albumforge: HF_HUB_OFFLINE is set: `models fetch` needs the hub (unset it here)", file=sys.stderr)
    prec = precision_of(cfg, precision)
    found = resolve_all(cfg, parts, fetch_missing=True, precision=prec)
    for f in found:
        print(f"  {f.need.field}: {f.need.ref} {f.state} {human(f.size) if f.ok else f.why}"
              + (f" -> {f.path}" if f.ok else ""))
    missing = [f for f in found if not f.ok]
    if missing:
        print(missing_report(found, None), file=sys.stderr)
        return 2
    print(f"all {len(found)} models here ({prec} weights where a repo has them); "
          "nodes sharing this HF_HOME can now run with HF_HUB_OFFLINE=1")
    return 0
