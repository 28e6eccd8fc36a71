"""k8s/rayjob.yaml is a RayJob KubeRay accepts, runs `generate` on GPU workers, and keeps
outputs and models on a volume every pod mounts; k8s/Dockerfile installs the project."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.test_cluster_yaml import _pip_installs

REPO = Path(__file__).resolve().parent.parent
SUBSET = REPO / "tests" / "data" / "kuberay_rayjob_v1_subset.json"


def _job() -> dict:
    return yaml.safe_load((REPO / "k8s" / "rayjob.yaml").read_text())


def _pods(job: dict) -> list[dict]:
    spec = job["spec"]["rayClusterSpec"]
    return [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]


def test_manifest_matches_the_rayjob_crd():
    job = _job()
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    jsonschema.validate(job, json.loads(SUBSET.read_text())["schema"])


def test_the_crd_subset_refuses_what_kuberay_would_drop():
    schema = json.loads(SUBSET.read_text())["schema"]
    bad = _job()
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplica"] = 4  # a typo: KubeRay would prune it
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        jsonschema.validate(bad, schema)
    bad = _job()
    del bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]  # required by the CRD
    with pytest.raises(jsonschema.ValidationError, match="groupName"):
        jsonschema.validate(bad, schema)


def test_gpu_workers_autoscale_and_run_the_generate_entrypoint():
    from ray_jobs.cli import generate_parser

    job = _job()
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    gpu_groups = [g for g in cluster["workerGroupSpecs"]
                  if int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)) > 0]
    assert gpu_groups and all(g["maxReplicas"] > g["minReplicas"] for g in gpu_groups)
    assert cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"  # only GPU nodes host actors
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:3] == ["python", "-m", "ray_jobs.generate"]
    args = generate_parser().parse_args(words[3:])  # flags the CLI knows
    mounts = {m["mountPath"] for pod in _pods(job) for c in pod["containers"] for m in c["volumeMounts"]}
    assert any(str(args.out).startswith(m + "/") for m in mounts) and str(args.concepts).startswith("/shared/")


def test_every_pod_shares_outputs_and_the_model_cache_offline():
    job = _job()
    images = set()
    for pod in _pods(job):
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        for c in pod["containers"]:
            images.add(c["image"])
            env = {e["name"]: e["value"] for e in c["env"]}
            assert env["HF_HUB_OFFLINE"] == "1"
            mounted = {m["mountPath"]: claims[m["name"]] for m in c["volumeMounts"]}
            assert any(env["HF_HOME"].startswith(p + "/") for p in mounted)
            assert set(mounted.values()) == {"albumforge-shared"}
    assert len(images) == 1  # one image: the head and workers run the same code


def test_dockerfile_installs_the_project_like_cluster_yaml():
    text = (REPO / "k8s" / "Dockerfile").read_text()
    run = " ".join(line.strip().rstrip("\\") for line in text.split("RUN", 1)[1].splitlines())
    installs = [a for args in _pip_installs([run]) for a in args]
    assert installs[0].startswith("torch") and "cu126" in run
    assert installs[1].startswith("uv==")  # the installer of the lock (tests/test_lock.py)
    copied_to = text.split("COPY", 1)[1].split()[-1]
    assert installs[2:] == [copied_to]  # the project itself, nothing else listed
    assert "-py311-gpu" in text.split("FROM", 1)[1].split()[0]
