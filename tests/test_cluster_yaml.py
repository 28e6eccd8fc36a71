"""cluster.yaml passes the Ray cluster launcher's own schema and asks for V100 nodes."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def test_cluster_yaml_is_a_valid_launcher_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # fills launcher defaults; raises on schema errors
    gpu_nodes = [t for t in config["available_node_types"].values() if t["resources"].get("GPU")]
    assert gpu_nodes and all(t["node_config"]["InstanceType"].startswith("p3.") for t in gpu_nodes)
    assert any("cu126" in c for c in config["setup_commands"])
