"""Test-only fault injection for Ray worker processes (put on PYTHONPATH by tests/test_faults.py).

``ALBUMFORGE_TEST_FAULT="<once|always>:<album_id>:<item_no>:<marker_dir>"`` makes the
MusicActor process kill itself with SIGSEGV when it is about to generate that track: on
every attempt (``always``: a deterministic native crash) or on the first only (``once``);
``slow:*:<seconds>:-`` makes every MusicActor call take that many seconds longer (a run long
enough to stop half way on a fast machine).

Deaths at start-up (issue 19), ``<mode>:<module>:<name>:<marker_dir>``:
``load-always`` / ``load-once`` make the function ``<module>.<name>`` (the model loader an
actor calls, e.g. ``actors.image:load_image``) kill its process with SIGSEGV on every call,
or on the first only; ``load-raise`` makes it raise instead; ``start-always`` SIGKILLs the
process as the class ``<module>.<name>`` starts to construct (before it can write anything:
the actor "killed as soon as it appears").
The production code has no hook: this wraps the named code when its module is imported in
a Ray worker.
"""

import importlib.abc
import importlib.util
import os
import signal
import sys

_SPEC = os.environ.get("ALBUMFORGE_TEST_FAULT")


def _die(marker_dir: str, sig: int) -> None:
    """Leave a marker (one per death), then die by ``sig``."""
    open(os.path.join(marker_dir, f"crash-{os.getpid()}"), "w").close()
    os.kill(os.getpid(), sig)


def _patch_start(module) -> None:
    mode, _, name, marker_dir = _SPEC.split(":", 3)
    target = getattr(module, name)
    if mode == "start-always":
        original_init = target.__init__

        def __init__(self, *args, **kwargs):
            _die(marker_dir, signal.SIGKILL)
            original_init(self, *args, **kwargs)

        target.__init__ = __init__
        return

    def load(*args, **kwargs):
        if mode == "load-raise":
            raise RuntimeError("injected load failure: weights file is truncated")
        if mode == "load-always" or not os.listdir(marker_dir):
            _die(marker_dir, signal.SIGSEGV)
        return target(*args, **kwargs)

    setattr(module, name, load)


def _patch(module) -> None:
    if _SPEC.split(":", 1)[0] in START_MODES:
        return _patch_start(module)
    mode, album_id, item_no, marker_dir = _SPEC.split(":", 3)
    item_no = float(item_no)
    original = module.MusicActor._render

    def _render(self, batch, idx):
        if mode == "slow":
            import time

            time.sleep(float(item_no))
            return original(self, batch, idx)
        for i in idx:
            if str(batch["album_id"][i]) == album_id and int(batch["item_no"][i]) == item_no:
                marker = os.path.join(marker_dir, f"crash-{os.getpid()}")
                first = not any(n.startswith("crash-") for n in os.listdir(marker_dir))
                if mode == "always" or first:
                    open(marker, "w").close()
                    os.kill(os.getpid(), signal.SIGSEGV)
        return original(self, batch, idx)

    module.MusicActor._render = _render


START_MODES = {"load-always", "load-once", "load-raise", "start-always"}


def _target_module() -> str:
    mode, module = _SPEC.split(":", 2)[:2]
    return module if mode in START_MODES else "actors.music"


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _target_module():
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if _SPEC:
    sys.meta_path.insert(0, _Hook())
