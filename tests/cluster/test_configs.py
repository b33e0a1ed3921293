"""The cloud/Kubernetes cluster configs parse, pass Ray's own validation, and agree with pyproject.toml's pins."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

CLUSTER = PROJECT_ROOT / "cluster"


def pins() -> dict[str, str]:
    """pyproject.toml's dependencies as {name: exact version} (extras dropped)."""
    deps = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[\[=]", d)[0]: d.split("==")[1] for d in deps}


def images(node) -> list[str]:
    """Every `image:` value anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k in ("image", "head_image")] + [
            i for v in node.values() for i in images(v)]
    if isinstance(node, list):
        return [i for v in node for i in images(v)]
    return []


@pytest.mark.parametrize("name", ["ray_cluster.yaml", "kuberay.yaml"])
def test_images_run_the_pinned_ray_on_python_311(name):
    found = images(yaml.safe_load((CLUSTER / name).read_text()))
    assert found and all(i.startswith(f"rayproject/ray:{pins()['ray']}-py311-") for i in found), found


def test_the_autoscaler_config_passes_ray_up_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config  # what `ray up` runs

    config = yaml.safe_load((CLUSTER / "ray_cluster.yaml").read_text())
    validate_config(prepare_config(config))
    assert config["head_node_type"] in config["available_node_types"]
    # the project and its pins reach every node; the token every node needs comes with them
    assert config["file_mounts"]["/home/ray/upvla"] == "."
    assert "/home/ray/.ray/auth_token" in config["file_mounts"]
    assert "pip install --no-cache-dir -e /home/ray/upvla" in config["setup_commands"]
    for command in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]:
        assert command.startswith("RAY_AUTH_MODE=token ray start"), command
    assert ".gitignore" in config["rsync_filter"]  # not the 3 GB .venv


def test_the_kuberay_cluster_gives_every_ray_process_the_same_token():
    manifest = yaml.safe_load((CLUSTER / "kuberay.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    spec = manifest["spec"]
    assert spec["rayVersion"] == pins()["ray"]
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        for container in pod["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "upvla-ray-token", "key": "token"}
    gpu = next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 4 and gpu["minReplicas"] <= gpu["maxReplicas"]


def test_the_runtime_env_installs_exactly_the_project_pins_except_ray():
    from ray.runtime_env import RuntimeEnv

    raw = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    RuntimeEnv(**raw)  # Ray's own validation of every field
    listed = dict(p.split("==") for p in raw["pip"]["packages"])
    assert listed == {name: version for name, version in pins().items() if name != "ray"}
    assert raw["working_dir"] == "." and raw["env_vars"]["HF_HUB_OFFLINE"] == "1"
