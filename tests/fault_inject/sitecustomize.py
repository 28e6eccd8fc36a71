"""Test-only fault injection for Ray worker processes (put on PYTHONPATH by tests/test_faults.py).

``ALBUMFORGE_TEST_FAULT="<once|always>:<album_id>:<item_no>:<marker_dir>"`` makes the
MusicActor process kill itself with SIGSEGV when it is about to generate that track: on
every attempt (``always``: a deterministic native crash) or on the first only (``once``);
``slow:*:<seconds>:-`` makes every MusicActor call take that many seconds longer (a run long
enough to stop half way on a fast machine).
The production code has no hook: this wraps ``MusicActor._render`` when ``actors.music``
is imported in a Ray worker.
"""

import importlib.abc
import importlib.util
import os
import signal
import sys

_SPEC = os.environ.get("ALBUMFORGE_TEST_FAULT")


def _patch(module) -> None:
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


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "actors.music":
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
