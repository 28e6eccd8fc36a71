"""Shared fixtures: tiny models built once per session, one local Ray for the session.

The session's Ray has 2 *logical* GPUs on this CPU-only machine (Ray resources are
admission control only), so the fractional-GPU placement of the real cluster is
exercised; actors still compute on the CPU since torch sees no CUDA device.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Planning must be offline in tests unless a test sets up its own OpenAI-compatible server.
for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(var, None)

REPO = Path(__file__).resolve().parent.parent


def require_services() -> bool:
    """CI sets ALBUMFORGE_REQUIRE_SERVICES=1: a missing service then fails instead of skipping."""
    return os.environ.get("ALBUMFORGE_REQUIRE_SERVICES") == "1"


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models are latency-bound: one intra-op thread is several times faster on a
    busy 2-core machine (Ray actors are other processes and keep their own setting)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    from actors.tiny import ensure_tiny

    cache = Path(os.environ.get("ALBUMFORGE_TEST_TINY_CACHE") or tmp_path_factory.mktemp("tiny-models"))
    ensure_tiny("music", cache)
    ensure_tiny("image", cache)
    return cache


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture()
def tiny_config(tmp_path, tiny_cache):
    """A tiny-engine RunConfig writing into a fresh folder (2 tracks of 2 s, 64 px covers)."""
    from albumforge.config import RunConfig

    def make(**overrides):
        base = {
            "out": tmp_path / "out",
            "tiny_cache": tiny_cache,
            "plan.tracks_per_album": 2,
            "plan.track_seconds": 2.0,
            "image.steps": 2,
        }
        base.update(overrides)
        return RunConfig.load(preset="tiny", **base)

    return make


@pytest.fixture(scope="session")
def s3_env():
    """A real S3-compatible server on loopback (tests/s3_server.py) for the session: the
    environment (keys, ``AWS_ENDPOINT_URL``) a client needs to reach it."""
    from tests.s3_server import s3_server

    with s3_server() as env:
        yield env


@pytest.fixture()
def s3_out(s3_env, monkeypatch):
    """A fresh bucket on the loopback S3 server, set as this test's environment; yields
    ``s3://<bucket>/run`` for ``--out``."""
    import secrets

    import fsspec

    from tests.s3_server import make_bucket

    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    fsspec.config.conf.pop("s3", None)
    bucket = "albumforge-" + secrets.token_hex(4)
    make_bucket(s3_env, bucket)
    yield f"s3://{bucket}/run"
