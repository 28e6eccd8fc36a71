"""cluster.yaml passes the Ray launcher's schema, offers p3 V100 types (spot too), and
installs the project itself: every package the project imports comes from pyproject.toml."""

from __future__ import annotations

import ast
import re
import shlex
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["actors", "albumforge", "catalog", "director", "ray_jobs"]


def _config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_is_a_valid_launcher_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _config()
    validate_config(prepare_config(config))  # fills launcher defaults; raises on schema errors
    types = config["available_node_types"]
    gpu = {name: t for name, t in types.items() if t["resources"].get("GPU")}
    assert {t["node_config"]["InstanceType"] for t in gpu.values()} == {"p3.2xlarge", "p3.8xlarge", "p3.16xlarge"}
    assert {t["node_config"]["InstanceType"]: t["resources"]["GPU"] for t in gpu.values()} == \
        {"p3.2xlarge": 1, "p3.8xlarge": 4, "p3.16xlarge": 8}
    assert any(t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot" for t in gpu.values())
    assert not types[config["head_node_type"]]["resources"].get("GPU")
    assert "describe-images" in (REPO / "cluster.yaml").read_text()  # says how to pick the AMI


def _pip_installs(commands: list[str]) -> list[list[str]]:
    """The arguments of each `pip install` / `uv pip install` in the setup (flags and their
    values removed: the lock given with -r is checked by tests/test_lock.py)."""
    found = []
    for command in commands:
        for part in re.split(r"&&|\|\||;", command):
            words = shlex.split(part.strip().strip("()"))
            if words and words[0].endswith("uv"):
                words = words[1:]
            if len(words) >= 2 and words[0].endswith("pip") and words[1] == "install":
                args, skip = [], False
                for w in words[2:]:
                    if skip:
                        skip = False
                    elif w.startswith("-"):
                        skip = w in ("--index-url", "-i", "--extra-index-url", "-c", "-r", "--python")
                    else:
                        args.append(w)
                found.append(args)
    return found


def test_setup_installs_the_project_and_nothing_copied():
    config = _config()
    installs = _pip_installs(config["setup_commands"])
    targets = [a for args in installs for a in args]
    mounts = {Path(dest).as_posix(): src for dest, src in config["file_mounts"].items()}
    project = [t for t in targets if t in mounts]
    assert project, f"no pip install of a mounted checkout in {targets}"
    assert all((REPO / mounts[t] / "pyproject.toml").is_file() for t in project)
    others = [t for t in targets if t not in mounts]
    # only the CUDA 12.6 torch, first, and the installer of the lock
    assert [re.split(r"[<>=!~ ]", t)[0] for t in others] == ["torch", "uv"]
    assert targets.index(others[0]) < targets.index(project[0])
    assert any("cu126" in c for c in config["setup_commands"])
    assert any("python3.11 -m venv" in c for c in config["setup_commands"])


def _imported_modules() -> set[str]:
    names = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - set(PACKAGES) - {"__future__"}


def _closure(requirements: list[str]) -> set[str]:
    """Distributions ``pip install .`` brings (in this environment): the declared ones and theirs."""
    from packaging.requirements import Requirement

    def norm(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    seen, todo = set(), [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        for extra_req in dist.requires or []:
            r = Requirement(extra_req)
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(r)
    return seen


def test_every_imported_package_comes_from_the_project_install():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    installed = _closure(deps)
    by_module = metadata.packages_distributions()
    missing = {}
    for module in sorted(_imported_modules()):
        dists = {re.sub(r"[-_.]+", "-", d).lower() for d in by_module.get(module, [])}
        if not dists & installed:
            missing[module] = sorted(dists)
    assert not missing, f"imported but not installed by `pip install .`: {missing}"
