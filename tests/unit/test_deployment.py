"""The deployment files, checked without a cluster: they parse, carry the fields KubeRay,
Kubernetes and Compose need, use the image this project builds, and every command line they
run is one the CLI accepts with a configuration that validates."""

import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from pipelines.cli import build_parser
from pipelines.config import load_settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
VERSION = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
IMAGE = f"embedworker:{VERSION}"


def k8s_documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> list[dict]:
    return [d for d in k8s_documents() if d["kind"] == kind]


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def cli_argv(command: str | list[str]):
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    assert argv[0] == "embedworker", argv
    return build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown option


def test_every_manifest_has_the_fields_kubernetes_needs():
    docs = k8s_documents()
    assert {d["kind"] for d in docs} == {"ConfigMap", "Secret", "RayCluster", "RayJob"}
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"], d
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"]["name"])
    for d in by_kind("RayCluster") + by_kind("RayJob"):
        assert d["apiVersion"] == "ray.io/v1"


def test_the_ray_cluster_has_a_cpu_head_and_an_autoscaling_gpu_group():
    (cluster,) = by_kind("RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    ray_pin = re.search(r'"ray\[[^]]*\]==([^"]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert spec["rayVersion"] == ray_pin
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "the head takes no replicas"
    for c in containers(head["template"]):
        assert c["image"] == IMAGE
        assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    (group,) = spec["workerGroupSpecs"]
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for c in containers(group["template"]):
        assert c["image"] == IMAGE
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert c["resources"]["requests"]["nvidia.com/gpu"] == "1"


def test_config_map_and_secret_are_wired_and_the_config_validates(tmp_path, monkeypatch):
    (config_map,) = by_kind("ConfigMap")
    (secret,) = by_kind("Secret")
    (cluster,) = by_kind("RayCluster")
    templates = [cluster["spec"]["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["spec"]["workerGroupSpecs"]]
    for template in templates:
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        for c in containers(template):
            mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
            assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
            assert mounts["config"] == "/etc/embedworker"
            assert {"secretRef": {"name": secret["metadata"]["name"]}} in c["envFrom"]
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    for name, value in secret["stringData"].items():
        monkeypatch.setenv(name, value)
    settings = load_settings(path)  # the secret's EMBEDWORKER__ variables are real settings too
    assert settings.kafka.security.sasl_password.get_secret_value() == "replace-me"
    assert settings.redis.password.get_secret_value() == "replace-me"
    group = cluster["spec"]["workerGroupSpecs"][0]
    assert settings.workers.num_gpus == 1 and settings.workers.replicas <= group["maxReplicas"]
    assert "password" not in config_map["data"]["config.yaml"].lower()
    # The deployment has the durability the local cluster rehearses (configs/cluster.yaml).
    rehearsed = load_settings(REPO / "configs" / "cluster.yaml")
    for section, keys in {"kafka": ["replication_factor", "min_insync_replicas"],
                          "redis": ["cluster", "wait_replicas", "wait_timeout_s", "quantization"]}.items():
        for key in keys:
            assert getattr(getattr(settings, section), key) == getattr(getattr(rehearsed, section), key), (section, key)
    assert settings.redis.shards % 3 == 0 and rehearsed.redis.shards % 3 == 0  # whole shards per master


@pytest.mark.parametrize("name, command", [("embedworker-stream", "run"), ("embedworker-backfill", "backfill")])
def test_ray_jobs_run_cli_commands_on_the_cluster(name, command):
    (job,) = [j for j in by_kind("RayJob") if j["metadata"]["name"] == name]
    (cluster,) = by_kind("RayCluster")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    args = cli_argv(job["spec"]["entrypoint"])
    assert args.command == command and args.config == "/etc/embedworker/config.yaml"
    for c in containers(job["spec"]["submitterPodTemplate"]):
        assert c["image"] == IMAGE
    if command == "backfill":
        assert args.input and args.target


def test_compose_runs_the_services_a_ray_head_and_the_worker(monkeypatch):
    compose = yaml.safe_load((REPO / "infra" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"kafka", "redis", "ray-head", "worker", "prometheus", "grafana"}
    scrape = yaml.safe_load((REPO / "infra" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    metrics_port = int(services["worker"]["environment"]["EMBEDWORKER__WORKERS__METRICS_PORT"])
    assert f"ray-head:{metrics_port}" in targets, "Prometheus scrapes replica 0 where the actors run"
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", services["kafka"]["image"])
    assert re.fullmatch(r"redis:(8|9)(\.\d+)*", services["redis"]["image"])
    for name in ("ray-head", "worker"):
        assert services[name]["image"] == IMAGE
    assert services["ray-head"]["build"]["dockerfile"] == "infra/Dockerfile"
    assert services["ray-head"]["command"][:3] == ["ray", "start", "--head"]
    worker = services["worker"]
    args = cli_argv(worker["command"])
    assert args.command == "run"
    config = REPO / "configs" / Path(args.config).name  # the image copies configs/ to /app/configs
    assert args.config == f"/app/configs/{config.name}" and config.is_file()
    for name, value in worker["environment"].items():
        monkeypatch.setenv(name, str(value))
    settings = load_settings(config)
    assert settings.kafka.bootstrap_servers == "kafka:19092" and settings.ray.address.startswith("ray-head:")
    head_port = next(a for a in services["ray-head"]["command"] if a.startswith("--port=")).split("=")[1]
    assert settings.ray.address == f"ray-head:{head_port}"
    assert f"{settings.workers.metrics_port}:{settings.workers.metrics_port}" in worker["ports"]


def test_the_image_installs_the_project_and_runs_a_shipped_config():
    dockerfile = (REPO / "infra" / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+-runtime-", dockerfile, re.M)
    assert "pip install ." in dockerfile and "COPY configs ./configs" in dockerfile
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1)
    args = cli_argv(yaml.safe_load(cmd))
    assert (REPO / "configs" / Path(args.config).name).is_file()
    load_settings(REPO / "configs" / Path(args.config).name)
    assert os.path.basename(args.config) == "news.yaml"
