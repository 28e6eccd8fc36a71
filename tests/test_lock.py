"""requirements.lock is current (issue 18): every dependency pyproject.toml declares (the
dev extra too) is pinned there at a version its range allows, torch is the one version
every install line names, and every install (README line 1, .ci/run, cluster.yaml,
k8s/Dockerfile) installs from the lock with the same installer version.

When this fails after a change to pyproject.toml: ``bash .ci/lock`` re-resolves the lock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements.lock"
INSTALLS = {  # where a machine is set up: each must install from the lock
    "README.md line 1": lambda: _readme_setup_line(),
    ".ci/run": lambda: (REPO / ".ci" / "run").read_text(),
    "cluster.yaml": lambda: (REPO / "cluster.yaml").read_text(),
    "k8s/Dockerfile": lambda: (REPO / "k8s" / "Dockerfile").read_text(),
}


def _readme_setup_line() -> str:
    block = (REPO / "README.md").read_text().split("```bash", 1)[1]
    return block.strip().splitlines()[0]


def _environments(python: str) -> dict:
    """A Linux x86_64 interpreter of version ``python`` (the supported platform)."""
    env = default_environment()
    env.update(python_version=python, python_full_version=f"{python}.0", sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", os_name="posix",
               implementation_name="cpython", platform_python_implementation="CPython")
    return env


def _pins(python: str) -> dict[str, Version]:
    """name -> pinned version for an interpreter of ``python`` (markers evaluated)."""
    env, pins = _environments(python), {}
    for line in LOCK.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        (spec,) = req.specifier  # the resolver writes exactly one ==
        assert spec.operator == "==", f"requirements.lock: {line!r} is not a pin"
        pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def _torch_version() -> str:
    first = LOCK.read_text().splitlines()[0]
    m = re.fullmatch(r"# torch==(\S+) .*", first)
    assert m, f"requirements.lock's first line should record the torch version (bash .ci/lock writes it): {first!r}"
    return m[1]


def test_every_declared_dependency_is_pinned_within_its_range():
    for python in ("3.11", "3.12"):
        pins = _pins(python)
        drift = []
        for req in _declared():
            name = canonicalize_name(req.name)
            if name == "torch":  # installed before the lock, at the version its first line records
                continue
            if name not in pins:
                drift.append(f"{req.name}: not in the lock")
            elif not req.specifier.contains(pins[name], prereleases=True):
                drift.append(f"{req.name}: locked at {pins[name]}, pyproject.toml asks {req.specifier}")
        assert not drift, (f"requirements.lock is stale for Python {python} (run `bash .ci/lock`): "
                           + "; ".join(drift))


def test_torch_is_out_of_the_lock_and_one_version_everywhere():
    version = _torch_version()
    assert "torch" not in _pins("3.11")  # the CPU or CUDA build is the machine's choice
    assert not [n for n in _pins("3.11") if n.startswith("nvidia-") or n == "triton"], \
        "CUDA packages in the lock: it must be resolved against the CPU build of torch"
    (torch,) = [r for r in _declared() if canonicalize_name(r.name) == "torch"]
    assert torch.specifier.contains(version), f"the lock's torch {version} is outside pyproject.toml's {torch.specifier}"
    for where, text in INSTALLS.items():
        named = set(re.findall(r"torch==([\w.+]+)", text()))
        assert named == {version}, f"{where} installs torch {sorted(named) or 'unpinned'}, the lock has {version}"
    assert f"TORCH={version}" in (REPO / ".ci" / "lock").read_text()


def test_every_install_uses_the_lock_with_one_uv_version():
    versions = {}
    for where, text in INSTALLS.items():
        body = text()
        assert re.search(r"uv pip install [^\n]*-r \S*requirements\.lock", body), f"{where} does not install from the lock"
        versions[where] = set(re.findall(r"uv==([\w.]+)", body))
    assert len(set().union(*versions.values())) == 1 and all(versions.values()), versions
