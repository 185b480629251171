"""The deployment files, checked without a cluster: they parse, carry the fields KubeRay,
Kubernetes and Compose need, use the image this project builds, and every command line they
run is one the CLI accepts with a configuration that validates."""

import importlib
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.cli.main import build_parser
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
    assert {d["kind"] for d in docs} == {"ConfigMap", "Secret", "RayCluster", "RayJob", "RayService"}
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"], d
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"]["name"])
    for d in by_kind("RayCluster") + by_kind("RayJob") + by_kind("RayService"):
        assert d["apiVersion"] == "ray.io/v1"


@pytest.fixture(scope="module")
def kuberay_crds() -> Path:
    """KubeRay's own CRDs (infra/local/kuberay_crds.sh: its Go module, fetched once)."""
    try:
        out = subprocess.run(["bash", str(REPO / "infra/local/kuberay_crds.sh")], capture_output=True, text=True,
                             timeout=300)
    except FileNotFoundError:
        pytest.skip("no bash here")
    if out.returncode != 0:
        pytest.skip(f"KubeRay's CRDs could not be fetched: {out.stderr.strip()[-300:]}")
    return Path(out.stdout.strip())


def strict(schema):
    """A CRD's OpenAPI schema as JSON Schema that refuses unknown fields, as `kubectl apply`
    (strict field validation) does, except where the schema preserves unknown fields."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@pytest.mark.integration  # fetches KubeRay's Go module (network) the first time
@pytest.mark.parametrize("kind, crd", [("RayCluster", "ray.io_rayclusters.yaml"), ("RayJob", "ray.io_rayjobs.yaml"),
                                       ("RayService", "ray.io_rayservices.yaml")])
def test_kuberay_manifests_validate_against_kuberays_crds(kuberay_crds, kind, crd):
    import jsonschema

    definition = yaml.safe_load((kuberay_crds / crd).read_text())
    (version,) = [v for v in definition["spec"]["versions"] if v["name"] == "v1"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    validator = jsonschema.Draft7Validator(schema)
    manifests = by_kind(kind)
    assert manifests
    for manifest in manifests:
        problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(manifest)]
        assert not problems, f"{manifest['metadata']['name']}: " + "; ".join(problems)


def test_the_ray_service_builds_the_query_service_from_the_config_map(tmp_path, monkeypatch):
    (service,) = by_kind("RayService")
    (config_map,) = by_kind("ConfigMap")
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = serve_config["applications"]
    module, name = app["import_path"].split(":")
    assert callable(getattr(importlib.import_module(module), name))
    assert app["args"]["config"] == "/etc/embedworker/config.yaml" and app["route_prefix"] == "/"
    assert serve_config["http_options"]["host"] == "0.0.0.0"
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    (secret,) = by_kind("Secret")
    for name, value in secret["stringData"].items():
        monkeypatch.setenv(name, value)
    settings = load_settings(path)
    assert settings.serve.api_key.get_secret_value() == "replace-me"
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == by_kind("RayCluster")[0]["spec"]["rayVersion"]
    (group,) = cluster["workerGroupSpecs"]
    gpus_per_pod = int(group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    assert settings.serve.max_replicas * settings.serve.num_gpus <= group["maxReplicas"] * gpus_per_pod
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "no replica on the head"


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
    assert set(services) == {"kafka", "redis", "ray-head", "worker", "query", "prometheus", "grafana"}
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
    query = cli_argv(services["query"]["command"])
    assert query.command == "serve" and query.host == "0.0.0.0" and query.config == args.config
    assert f"{query.port}:{query.port}" in services["ray-head"]["ports"], "Serve's proxy runs on the head"
    assert services["query"]["environment"]["EMBEDWORKER__RAY__ADDRESS"] == settings.ray.address
    assert f"ray-head:{query.port}" in targets, "Prometheus scrapes the query service's /metrics"


def test_the_image_installs_the_project_and_runs_a_shipped_config():
    dockerfile = (REPO / "infra" / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+-runtime-", dockerfile, re.M)
    assert "pip install ." in dockerfile and "COPY configs ./configs" in dockerfile
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1)
    args = cli_argv(yaml.safe_load(cmd))
    assert (REPO / "configs" / Path(args.config).name).is_file()
    load_settings(REPO / "configs" / Path(args.config).name)
    assert os.path.basename(args.config) == "news.yaml"
