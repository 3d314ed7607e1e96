"""ray_cluster.yaml is a real cluster-launcher config: Ray's own schema validation accepts it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

CONFIG = Path(__file__).resolve().parents[2] / "ray_cluster.yaml"


def _load() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_cluster_yaml_passes_ray_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(_load())
    validate_config(config)
    assert config["head_node_type"] in config["available_node_types"]


def test_cluster_has_cpu_and_gpu_groups():
    config = _load()
    types = config["available_node_types"]
    assert any(
        "p4d" in t["node_config"]["InstanceType"] or "p5" in t["node_config"]["InstanceType"] for t in types.values()
    )
    setup = "\n".join(config["setup_commands"])
    assert "torch==2.13.0" in setup and "constraints.txt" in setup
    assert "AFFECTFLOW_STORE" in setup and "MLFLOW_TRACKING_URI" in setup


def test_schema_rejects_a_broken_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load()
    broken = copy.deepcopy(config)
    broken["available_node_types"]["head"]["no_such_field"] = 1
    with pytest.raises(Exception):
        validate_config(prepare_config(broken))
