"""cluster.yaml: valid for Ray's own cluster launcher, offline, and safe to commit.

Validation is Ray's: ``prepare_config`` merges the AWS provider's packaged
``defaults.yaml`` (a local file: no boto3 call, no credentials, no network)
and ``validate_config`` checks the result against ``ray-schema.json``, whose
top level, node types and docker section reject unknown keys. Neither
bootstraps the provider (that step, run by ``ray up``, talks to AWS).
"""
from __future__ import annotations

import copy
import json
import re
import shlex
import socket
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from lxsweep.sweep import DRIVER_RESOURCE

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture
def cfg(text: str) -> dict:
    return yaml.safe_load(text)


def ray_validate(cfg: dict) -> dict:
    """What ``ray up`` checks before it contacts the cloud; returns the prepared config."""
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def worker_types(cfg: dict) -> dict:
    return {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}


def head_start_command(cfg: dict) -> list[str]:
    """The argv of the head's `ray start`."""
    (cmd,) = [c for c in cfg["head_start_ray_commands"] if "ray start" in c]
    argv = shlex.split(cmd.split(";")[-1])
    return argv[argv.index("ray"):]


def flag(argv: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(f"{name}=")]
    return value


KEY_PATTERNS = {
    "a WANDB_API_KEY with a value": re.compile(r"WANDB_API_KEY\s*[=:]\s*['\"]?[^\s'\"$]"),
    "a 40-hex W&B key": re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{40}(?![0-9a-fA-F])"),
    "a W&B v1 key": re.compile(r"wandb_v1_\w+"),
    "an AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a netrc password": re.compile(r"\bpassword\s+\S+"),
    "a long random-looking token": re.compile(r"(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[A-Za-z])\b[A-Za-z0-9]{32,}\b"),
}


def secret_findings(text: str) -> list[str]:
    """What in ``text`` looks like a credential (comments included)."""
    return [f"{what}: {m.group(0)[:12]}..." for what, rx in KEY_PATTERNS.items() for m in rx.finditer(text)]


# -- Ray's schema -------------------------------------------------------------


def test_cluster_yaml_passes_rays_validation_without_network(cfg, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("cluster.yaml validation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    prepared = ray_validate(cfg)
    assert prepared["provider"]["type"] == "aws"
    # prepare_config merged the common setup into each role: the checkout is installed everywhere.
    for role in ("head_setup_commands", "worker_setup_commands"):
        assert any("pip install" in c and "lxsweep" in c for c in prepared[role])


@pytest.mark.parametrize("where, typo", [
    ((), "idle_timeout_minute"),
    (("available_node_types", "head"), "min_worker"),
    (("available_node_types", "gpu_1x_a10g"), "max_worker"),
    (("docker",), "run_option"),
])
def test_an_unknown_key_is_rejected(cfg, where, typo):
    section = cfg
    for key in where:
        section = section[key]
    section[typo] = 1
    with pytest.raises(jsonschema.ValidationError, match=typo):
        ray_validate(cfg)


# -- what lxsweep needs from the cluster --------------------------------------


def test_head_runs_drivers_and_no_training(cfg):
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"]["CPU"] == 0  # no Train worker ({"CPU": n, ...}) fits here
    assert head["resources"].get("GPU", 0) == 0
    slots = head["resources"][DRIVER_RESOURCE]
    assert slots >= 1
    # The launcher passes node-type resources to `ray start` (RAY_OVERRIDE_RESOURCES);
    # the explicit flags must say the same, or whoever reads one is misled.
    argv = head_start_command(cfg)
    assert "--head" in argv
    assert json.loads(flag(argv, "--resources")) == {DRIVER_RESOURCE: slots}
    assert flag(argv, "--num-cpus") == "0"


def test_gpu_workers_scale_from_zero_and_never_host_drivers(cfg):
    workers = worker_types(cfg)
    assert workers
    for name, node in workers.items():
        assert node["min_workers"] == 0, name
        assert node["max_workers"] >= 1, name
        assert node["resources"]["GPU"] >= 1, name
        assert node["resources"]["CPU"] >= 1, name
        assert DRIVER_RESOURCE not in node["resources"], name  # scale-down must never kill a driver


def test_driver_slots_cover_every_gpu(cfg):
    """One-GPU trials can keep the whole cluster busy: a slot per GPU at least."""
    gpus = sum(n["max_workers"] * n["resources"]["GPU"] for n in worker_types(cfg).values())
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"][DRIVER_RESOURCE] >= gpus
    assert cfg["max_workers"] >= sum(n["max_workers"] for n in worker_types(cfg).values())


def test_image_is_the_installed_ray_and_not_ray_ml(cfg, text):
    docker = cfg["docker"]
    assert docker["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    images = [docker.get(k) for k in ("image", "head_image", "worker_image")]
    images += [n.get("docker", {}).get("worker_image") for n in cfg["available_node_types"].values()]
    assert not [i for i in images if i and "ray-ml" in i]
    # pip must not move Ray off the image's version on any node.
    assert any(f"=={ray.__version__}" in c and "ray[" in c for c in cfg["setup_commands"])


def test_dashboard_listens_on_localhost_only(cfg):
    argv = head_start_command(cfg)
    assert flag(argv, "--dashboard-host") == "127.0.0.1"
    assert not [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "0.0.0.0" in c]


def test_token_auth_and_ssh_only(cfg):
    assert "-e RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    # No extra inbound rules: the launcher opens SSH and intra-cluster traffic only.
    assert "IpPermissions" not in cfg["provider"].get("security_group", {})
    assert cfg["provider"].get("use_internal_ips", False) is False  # SSH from your machine needs a public IP


def test_the_checkout_is_synced_and_installed(cfg):
    assert cfg["file_mounts"]["~/lxsweep"] == "."
    assert any(re.search(r"pip install .*-e \S*(~|\$HOME)/lxsweep", c) for c in cfg["setup_commands"])
    assert ".gitignore" in cfg["rsync_filter"]  # local stores (runs/) stay home


# -- secrets ------------------------------------------------------------------


def test_no_secret_in_the_file(cfg, text):
    assert secret_findings(text) == []
    assert "WANDB_API_KEY" not in text
    assert "runtime_env" not in json.dumps(cfg)  # env_vars there show on the dashboard


@pytest.mark.parametrize("planted", [
    "WANDB_API_KEY=0123456789abcdef",
    'export WANDB_API_KEY="x1"',
    "key: 0123456789abcdef0123456789abcdef01234567",
    "wandb_v1_AbCdEf012345",
    "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
    "-----BEGIN RSA PRIVATE KEY-----",
    "machine api.wandb.ai login user password hunter2",
    "token: Zk3q9Xw2Lr8Tn4Vb7Yc1Md6Pf0Gh5Js2",
])
def test_the_secret_check_catches_planted_keys(text, planted):
    assert secret_findings(text + f"\n# {planted}\n")
