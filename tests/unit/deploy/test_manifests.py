"""The deployment files are checked by reading them, since nothing here runs a container:

- every YAML file parses; every Kubernetes manifest passes the Kubernetes JSON schemas
  (strict: an unknown or misspelt field fails) of the oldest and newest versions we name;
- every Deployment runs non-root with a read-only root filesystem, no privilege
  escalation and no capabilities, has native gRPC probes on its service's port, resource
  requests and limits, a writable /tmp, and a Service, an HPA and a PDB that select it;
- every kustomization renders (tests/unit/deploy/kustomize.py, compared with `kubectl
  kustomize` where kubectl is installed) to manifests that pass the same schemas and keep
  the same lock-down, with /tmp the only writable mount and Secrets mounted read-only;
- the TLS overlays point every HERALD_TLS_* setting at the mounted Secret's files and
  replace the native (plaintext) gRPC probes with the TLS health-check module;
- every environment variable the manifests, the compose file and the Dockerfile set is a
  real setting (services.core.config.Settings, services.delivery.options, the sandbox's
  HERALD_SANDBOX_* names), and the values they set pass the same validation the services
  run at start-up;
- the wiring holds: addresses name real services and ports, the sandbox's CA volume is
  where Delivery looks for it, provider origins are names the sandbox's certificate covers;
- the commands name real modules, and the Dockerfile's runtime stage is not root.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]  # no py.typed
import pytest
import yaml
from pydantic import AliasChoices

from services.core import healthcheck
from services.core.config import (
    CONFIG_FILE_VAR,
    DEFAULT_PORTS,
    ENV_PREFIX,
    ConfigError,
    Settings,
    load_settings,
)
from services.delivery import options as delivery_options
from tests.unit.deploy import kustomize

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
BASE = KUBERNETES / "base"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
SECRET_TEMPLATE = BASE / "secret.template.yaml"
SERVICES = tuple(DEFAULT_PORTS)  # registration, identity, campaign, delivery

# The oldest Kubernetes we claim to support and the newest the offline schemas know.
KUBERNETES_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
KUSTOMIZATIONS = sorted(KUBERNETES.rglob("kustomization.yaml"))
# What `kubectl apply -k` takes (components are parts of these, not applied alone).
KUSTOMIZE_DIRECTORIES = [
    str(p.parent.relative_to(KUBERNETES))
    for p in KUSTOMIZATIONS
    if yaml.safe_load(p.read_text())["kind"] == "Kustomization"
]
TLS_OVERLAYS = ("overlays/tls", "overlays/mtls")
TLS_SECRET = "herald-tls"
MANIFEST_FILES = sorted(p for p in KUBERNETES.rglob("*.yaml") if p.name != "kustomization.yaml")

# A value for each variable compose takes from outside (deploy/.env or the shell).
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - containers listen on the pod's interfaces
COMPOSE_INPUTS = {"HERALD_CREDENTIALS_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}


# -- reading ------------------------------------------------------------------------------


def _load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@cache
def _manifests() -> tuple[tuple[Path, dict[str, Any]], ...]:
    return tuple((path, doc) for path in MANIFEST_FILES for doc in _load_all(path))


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _manifests() if doc.get("kind") == kind]


def _deployments() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in _of_kind("Deployment")}


@cache
def _rendered(directory: str) -> tuple[dict[str, Any], ...]:
    """What `kubectl kustomize deploy/kubernetes/<directory>` prints (kustomize.py)."""
    return tuple(kustomize.render(KUBERNETES / directory))


def _rendered_deployments(directory: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _rendered(directory) if d["kind"] == "Deployment"}


def _rendered_configmap(directory: str) -> dict[str, str]:
    (configmap,) = [d for d in _rendered(directory) if d["kind"] == "ConfigMap"]
    return {str(k): str(v) for k, v in configmap["data"].items()}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one Herald process per pod"
    return dict(containers[0])


@cache
def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _herald_compose_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the Herald image."""
    image = _compose()["x-herald-container"]["image"]
    return {
        name: spec for name, spec in _compose()["services"].items() if spec.get("image") == image
    }


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _interpolate(value: Any) -> str:
    """A compose value as compose would set it, with COMPOSE_INPUTS for required inputs."""

    def substitute(match: re.Match[str]) -> str:
        if match["op"] and match["op"].endswith("-"):
            return match["arg"]
        assert match["name"] in COMPOSE_INPUTS, f"no test value for ${{{match['name']}}}"
        return COMPOSE_INPUTS[match["name"]]

    return _INTERPOLATION.sub(substitute, str(value))


def _compose_environment(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment") or {}
    assert isinstance(env, dict), "environment as a mapping (merged from the shared anchor)"
    return {str(k): _interpolate(v) for k, v in env.items()}


@dataclasses.dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]]


def _dockerfile_instructions() -> Iterator[tuple[str, str]]:
    logical = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, rest = logical.partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""


@cache
def _dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages)."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in _dockerfile_instructions():
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, base, []))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
        elif keyword == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
    return args, stages


def _env_pairs(rest: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(rest))


def _json_command(rest: str) -> list[str]:
    value = yaml.safe_load(rest)  # exec form is a JSON array
    assert isinstance(value, list), f"exec form, not shell form: {rest}"
    return [str(v) for v in value]


# -- what exists ----------------------------------------------------------------------------


def _settings_variables() -> set[str]:
    names = {CONFIG_FILE_VAR}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c for c in alias.choices if isinstance(c, str) and c.isupper()}
        else:
            names.add(ENV_PREFIX + field_name.upper())
    return names


def _delivery_variables() -> set[str]:
    return {
        delivery_options.PREFIX + spec.name.upper()
        for spec in dataclasses.fields(delivery_options.DeliveryOptions)
    }


def _sandbox_variables() -> set[str]:
    """Every HERALD_SANDBOX_* name the sandbox's code reads (string constants)."""
    names: set[str] = set()
    for path in (ROOT / "services" / "sandbox").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"HERALD_SANDBOX_[A-Z0-9_]+", node.value)
            ):
                names.add(node.value)
    return names


def _known_variables() -> set[str]:
    return _settings_variables() | _delivery_variables() | _sandbox_variables()


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _assert_runs_module(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"], f"python -m <module>: {command}"
    module = command[2]
    assert module.startswith("services."), module
    assert _module_exists(module), f"{module} is not a module"
    spec = importlib.util.find_spec(module)
    assert spec is not None
    if spec.submodule_search_locations is None:  # a plain module runs its __main__ block
        assert spec.origin is not None
        source = Path(spec.origin).read_text()
        assert 'if __name__ == "__main__":' in source, f"{module} cannot run with python -m"
    else:
        assert _module_exists(module + ".__main__"), f"{module} cannot run with python -m"
    return module


def _grpc_full_name(service: str) -> str:
    """The gRPC service name in services/<service>/spec.py's SPEC (read, not imported)."""
    tree = ast.parse((ROOT / "services" / service / "spec.py").read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "SPEC" for t in node.targets)
            and isinstance(node.value, ast.Call)
        ):
            for keyword in node.value.keywords:
                if keyword.arg == "full_name" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
    raise AssertionError(f"no SPEC full_name in services/{service}/spec.py")


def _load_settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    import os

    for name in list(os.environ):
        if name.startswith(("HERALD_", "REDIS_", "OTEL_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


# -- every YAML file ----------------------------------------------------------------------


def test_the_deploy_files_exist() -> None:
    for path in (DOCKERFILE, COMPOSE, DEPLOY / "otel-collector.yaml", DEPLOY / "README.md"):
        assert path.is_file(), path
    assert {p.stem for p in BASE.glob("*.yaml")} >= set(SERVICES)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert _load_all(path), f"{path} is empty"


# -- Kubernetes -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_passes_the_kubernetes_schema(version: str) -> None:
    assert _manifests()
    for path, doc in _manifests():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name} {doc.get('kind')} {doc['metadata']['name']}: {error}")


def test_the_kustomizations_name_files_that_exist() -> None:
    assert KUSTOMIZATIONS
    for path in KUSTOMIZATIONS:
        doc = yaml.safe_load(path.read_text())
        assert doc["apiVersion"].startswith("kustomize.config.k8s.io/")
        for entry in doc.get("resources", []) + doc.get("components", []):
            assert (path.parent / entry).exists(), f"{path}: {entry} does not exist"


def test_the_base_includes_every_manifest_but_the_secret_template() -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    files = {p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == files - {SECRET_TEMPLATE.name}
    # Applying the kustomization must never replace the real Secret with placeholders.
    assert not _of_kind("Secret") or all(
        path == SECRET_TEMPLATE for path, doc in _manifests() if doc["kind"] == "Secret"
    )


def test_the_secret_is_a_template_whose_placeholders_cannot_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (secret,) = _of_kind("Secret")
    assert "TEMPLATE" in SECRET_TEMPLATE.read_text()
    values = secret["stringData"]
    assert set(values) == {
        "REDIS_URL",
        "HERALD_CREDENTIALS_KEY",
        "HERALD_ADMIN_KEY",
        "HERALD_INTERNAL_KEY",
    }
    assert all("REPLACE_ME" in value for value in values.values())
    # A forgotten placeholder stops the service at start-up instead of being used.
    for name in ("HERALD_CREDENTIALS_KEY", "HERALD_ADMIN_KEY", "HERALD_INTERNAL_KEY"):
        with pytest.raises(ConfigError, match=name):
            _load_settings_from({name: values[name]}, monkeypatch)


def _pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_there_is_a_deployment_per_service_running_its_module() -> None:
    deployments = _deployments()
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        container = _container(deployment)
        assert _assert_runs_module(container["command"]) == f"services.{name}"
        assert _selects(deployment["spec"]["selector"]["matchLabels"], _pod_labels(deployment))


@pytest.mark.parametrize("directory", KUSTOMIZE_DIRECTORIES)
@pytest.mark.parametrize("name", SERVICES)
def test_deployments_run_locked_down(directory: str, name: str) -> None:
    deployment = _rendered_deployments(directory)[name]
    pod = deployment["spec"]["template"]["spec"]
    pod_context = pod["securityContext"]
    assert pod_context["runAsNonRoot"] is True
    assert pod_context["runAsUser"] == _dockerfile_uid() != 0
    assert pod_context["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    # Service links would inject e.g. HERALD_REGISTRATION_PORT=tcp://... for a Service
    # named herald-registration, which Settings would refuse.
    assert pod["enableServiceLinks"] is False
    context = _container(deployment)["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["runAsNonRoot"] is True
    assert context.get("privileged", False) is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert not context["capabilities"].get("add")


@pytest.mark.parametrize("directory", KUSTOMIZE_DIRECTORIES)
@pytest.mark.parametrize("name", SERVICES)
def test_deployments_have_a_writable_tmp_only(directory: str, name: str) -> None:
    deployment = _rendered_deployments(directory)[name]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = _container(deployment)["volumeMounts"]
    assert len({m["mountPath"] for m in mounts}) == len(mounts)
    (writable,) = [m for m in mounts if not m.get("readOnly")]
    assert writable["mountPath"] == "/tmp"
    assert "emptyDir" in volumes[writable["name"]]
    # Anything else is a Secret's files, read-only, beside the paths the image uses.
    for mount in mounts:
        if mount is not writable:
            assert mount["readOnly"] is True, mount
            assert set(volumes[mount["name"]]) == {"name", "secret"}, mount
            assert not mount.get("subPath"), "a subPath mount never sees a renewed Secret"
            assert mount["mountPath"].startswith("/etc/herald/"), mount


@pytest.mark.parametrize("name", SERVICES)
def test_deployments_have_native_grpc_probes_on_their_port(name: str) -> None:
    deployment = _deployments()[name]
    container = _container(deployment)
    port = DEFAULT_PORTS[name]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "grpc": port,
        "metrics": 9464,
    }
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9464"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port, probe
        assert not {"httpGet", "tcpSocket", "exec"} & set(container[probe]), probe
    # Ready means this service's servicer is registered and not draining.
    assert container["readinessProbe"]["grpc"]["service"] == _grpc_full_name(name)
    grace = float(Settings.model_fields["shutdown_grace_seconds"].default)
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > (
        pre_stop + grace
    )


def _quantity(value: str | int) -> float:
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


@pytest.mark.parametrize("name", SERVICES)
def test_deployments_request_and_limit_resources(name: str) -> None:
    resources = _container(_deployments()[name])["resources"]
    for resource in ("cpu", "memory"):
        request = _quantity(resources["requests"][resource])
        limit = _quantity(resources["limits"][resource])
        assert 0 < request <= limit, resource


@pytest.mark.parametrize("name", SERVICES)
def test_each_deployment_has_a_service_an_hpa_and_a_pdb(name: str) -> None:
    deployment = _deployments()[name]
    labels = _pod_labels(deployment)
    port = DEFAULT_PORTS[name]

    (service,) = [s for s in _of_kind("Service") if s["metadata"]["name"] == name]
    assert _selects(service["spec"]["selector"], labels)
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(port, "grpc")]

    (hpa,) = [h for h in _of_kind("HorizontalPodAutoscaler") if h["metadata"]["name"] == name]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", name)
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The HPA owns the count: a `replicas` here would reset it on every apply.
    assert "replicas" not in deployment["spec"]

    (pdb,) = [p for p in _of_kind("PodDisruptionBudget") if p["metadata"]["name"] == name]
    assert pdb["apiVersion"] == "policy/v1"
    assert _selects(pdb["spec"]["selector"]["matchLabels"], labels)
    # At the HPA's minimum, a voluntary eviction must still be possible.
    assert pdb["spec"].get("maxUnavailable", 0) >= 1 or (
        pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    )


def _configmap() -> dict[str, str]:
    (configmap,) = _of_kind("ConfigMap")
    return {str(k): str(v) for k, v in configmap["data"].items()}


def _kubernetes_variables(directory: str | None = None) -> dict[str, set[str]]:
    """Every variable each Deployment sets, through env or envFrom (ConfigMap, Secret):
    of the manifest files, or of a kustomization as rendered (the Secret is the template
    either way: no kustomization applies it)."""
    docs = _rendered(directory) if directory else tuple(doc for _, doc in _manifests())
    configmaps = {c["metadata"]["name"]: set(c["data"]) for c in docs if c["kind"] == "ConfigMap"}
    secrets = {s["metadata"]["name"]: set(s["stringData"]) for s in _of_kind("Secret")}
    result: dict[str, set[str]] = {}
    deployments = _rendered_deployments(directory) if directory else _deployments()
    for name, deployment in deployments.items():
        container = _container(deployment)
        names = {e["name"] for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                names |= configmaps[source["configMapRef"]["name"]]
            if "secretRef" in source:
                names |= secrets[source["secretRef"]["name"]]
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]], f"{name}: {ref} not in the template"
        result[name] = names
    return result


@pytest.mark.parametrize("directory", [None, *KUSTOMIZE_DIRECTORIES])
def test_kubernetes_sets_only_real_settings(directory: str | None) -> None:
    known = _known_variables()
    for name, variables in _kubernetes_variables(directory).items():
        assert variables, name
        assert variables <= known, f"{name}: unknown {sorted(variables - known)}"
        assert not {v for v in variables if v.startswith("HERALD_SANDBOX_")}, name
        assert "REDIS_URL" in variables, name
    # Only Delivery gets the key that decrypts provider credentials.
    holders = {
        n for n, v in _kubernetes_variables(directory).items() if "HERALD_CREDENTIALS_KEY" in v
    }
    assert holders == {"delivery"}
    assert "HERALD_CREDENTIALS_KEY" not in _configmap()


def test_the_configmap_values_pass_the_services_validation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Real secrets as the operator would create them (the template's are placeholders).
    secrets = {
        "REDIS_URL": "redis://redis.example:6379/0",
        "HERALD_INTERNAL_KEY": "k" * 48,
        "HERALD_ADMIN_KEY": "a" * 48,
    }
    env = _configmap() | secrets
    settings = _load_settings_from(env, monkeypatch)
    assert settings.require_api_keys
    assert settings.metrics_port == 9464
    assert settings.host == ALL_INTERFACES
    assert settings.trace_exporter != "otlp" or settings.otlp_endpoint
    delivery_options.DeliveryOptions.from_env(env)  # raises ConfigError on a bad value
    services = {s["metadata"]["name"]: s for s in _of_kind("Service")}
    for name in SERVICES:
        host, _, port = getattr(settings, f"{name}_address").rpartition(":")
        assert host in services, f"{name}_address names no Service"
        assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]]


def test_the_redis_cluster_overlay_turns_the_cluster_client_on() -> None:
    overlay = yaml.safe_load(
        (KUBERNETES / "overlays" / "redis-cluster" / "kustomization.yaml").read_text()
    )
    (patch,) = overlay["patches"]
    assert patch["target"] == {"kind": "ConfigMap", "name": "herald-config"}
    operations = yaml.safe_load(patch["patch"])
    assert operations == [{"op": "replace", "path": "/data/HERALD_REDIS_CLUSTER", "value": "true"}]
    assert _configmap()["HERALD_REDIS_CLUSTER"] == "false"  # the path the patch replaces


def _kubectl_kustomize(directory: Path) -> list[dict[str, Any]]:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(rendered) if d]


def _by_identity(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(docs, key=lambda d: (d["kind"], d["metadata"]["name"]))


def test_every_kustomization_and_component_is_rendered_by_these_tests() -> None:
    assert {"base", "overlays/redis-cluster", *TLS_OVERLAYS} <= set(KUSTOMIZE_DIRECTORIES)
    used = {
        (KUBERNETES / directory / entry).resolve()
        for directory in KUSTOMIZE_DIRECTORIES
        for entry in yaml.safe_load(
            (KUBERNETES / directory / "kustomization.yaml").read_text()
        ).get("components", [])
    }
    components = {
        p.parent.resolve()
        for p in KUSTOMIZATIONS
        if yaml.safe_load(p.read_text())["kind"] == "Component"
    }
    assert components == used, "a component no overlay uses is never checked"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZE_DIRECTORIES)
def test_every_kustomization_renders_valid_manifests(directory: str, version: str) -> None:
    docs = _rendered(directory)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == sorted(
        {"Namespace", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"}
        | {"PodDisruptionBudget"}
    )
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{directory}: {doc['kind']} {doc['metadata']['name']}: {error}")
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "herald"
    cluster = _rendered_configmap(directory)["HERALD_REDIS_CLUSTER"]
    assert cluster == ("true" if directory.endswith("redis-cluster") else "false")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
@pytest.mark.parametrize("directory", KUSTOMIZE_DIRECTORIES)
def test_the_renderer_here_renders_what_kubectl_renders(directory: str) -> None:
    assert _by_identity(_rendered(directory)) == _by_identity(
        _kubectl_kustomize(KUBERNETES / directory)
    )


# -- TLS ------------------------------------------------------------------------------------


def _tls_volume(deployment: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the volume of the herald-tls Secret, its mount in the container)."""
    (volume,) = [
        v
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if v.get("secret", {}).get("secretName") == TLS_SECRET
    ]
    (mount,) = [m for m in _container(deployment)["volumeMounts"] if m["name"] == volume["name"]]
    return volume, mount


def _tls_files(directory: str) -> dict[str, str]:
    return {k: v for k, v in _rendered_configmap(directory).items() if k.startswith("HERALD_TLS_")}


def test_only_the_tls_overlays_turn_tls_on() -> None:
    for directory in KUSTOMIZE_DIRECTORIES:
        if directory not in TLS_OVERLAYS:
            assert not _tls_files(directory), directory
            for deployment in _rendered_deployments(directory).values():
                assert "secret" not in str(deployment["spec"]["template"]["spec"]["volumes"])
    assert set(_tls_files("overlays/tls")) == {
        "HERALD_TLS_CERT_FILE",
        "HERALD_TLS_KEY_FILE",
        "HERALD_TLS_CA_FILE",
    }
    # mTLS: the listeners also require a client certificate from the same CA.
    mtls = _tls_files("overlays/mtls")
    assert mtls == _tls_files("overlays/tls") | {
        "HERALD_TLS_CLIENT_CA_FILE": mtls["HERALD_TLS_CA_FILE"]
    }


@pytest.mark.parametrize("directory", TLS_OVERLAYS)
@pytest.mark.parametrize("name", SERVICES)
def test_the_tls_settings_point_at_the_secret_mounted_read_only(directory: str, name: str) -> None:
    volume, mount = _tls_volume(_rendered_deployments(directory)[name])
    assert mount["readOnly"] is True
    secret = volume["secret"]
    assert secret.get("optional", False) is False, "no Secret, no pod: not a plaintext one"
    assert secret["defaultMode"] & 0o777 == 0o440, "readable by the pod's group, by no one else"
    # The keys of a kubernetes.io/tls Secret, as cert-manager writes them.
    files = {item["key"]: item["path"] for item in secret["items"]}
    assert set(files) == {"tls.crt", "tls.key", "ca.crt"}
    mounted = {f"{mount['mountPath']}/{path}" for path in files.values()}
    for variable, path in _tls_files(directory).items():
        assert path in mounted, f"{variable}={path} is not a file of the mounted Secret"


@pytest.mark.parametrize("directory", TLS_OVERLAYS)
def test_the_tls_settings_pass_the_services_validation(
    directory: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The files as the Secret's volume holds them, here instead of under the mount path
    # (their contents are test_healthcheck.py's and test_tls.py's business).
    _, mount = _tls_volume(_rendered_deployments(directory)["registration"])
    env = _rendered_configmap(directory) | {
        "REDIS_URL": "redis://redis.example:6379/0",
        "HERALD_INTERNAL_KEY": "k" * 48,
        "HERALD_ADMIN_KEY": "a" * 48,
    }
    for variable, path in _tls_files(directory).items():
        local = tmp_path / Path(path).relative_to(mount["mountPath"])
        local.write_text("PEM")
        env[variable] = str(local)
    settings = _load_settings_from(env, monkeypatch)
    assert settings.tls_cert_file  # every listener serves TLS
    assert settings.tls_key_file
    assert settings.tls_ca_file  # the services call each other over TLS
    assert bool(settings.tls_client_ca_file) == directory.endswith("mtls")
    # No HERALD_TLS_SERVER_NAME: each service checks the name it dials, its Service's.
    assert not settings.tls_server_name


@pytest.mark.parametrize("directory", TLS_OVERLAYS)
@pytest.mark.parametrize("name", SERVICES)
def test_the_tls_probes_ask_the_health_service_over_tls(directory: str, name: str) -> None:
    deployment = _rendered_deployments(directory)[name]
    container = _container(deployment)
    port = DEFAULT_PORTS[name]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"] == port
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]
        # The kubelet's gRPC probe cannot speak TLS: with it left, no pod is ever ready.
        assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"exec"}, kind
        command = probe["exec"]["command"]
        assert _assert_runs_module(command) == healthcheck.__name__, kind
        args = healthcheck.argument_parser().parse_args(command[3:])
        assert args.port == port, kind
        # The name the other services dial, so the one the certificate must carry.
        assert (
            args.server_name
            == name
            == _rendered_configmap(directory)[f"HERALD_{name.upper()}_ADDRESS"].rpartition(":")[0]
        )
        # Ready: this service's servicer, not draining; started and alive: the server.
        expected = _grpc_full_name(name) if kind == "readinessProbe" else ""
        assert args.service == expected, kind
        # The kubelet kills the probe at timeoutSeconds: leave Python time to start.
        assert probe["timeoutSeconds"] >= args.timeout + 2, kind
    # Draining still has its time: the preStop sleep and the grace period are the base's.
    base = _container(_rendered_deployments("base")[name])
    assert container["lifecycle"] == base["lifecycle"]


def test_tls_combines_with_the_redis_cluster_overlay(tmp_path: Path) -> None:
    """What deploy/README.md tells an operator to write for a cluster with mTLS."""
    kubernetes = Path(os.path.relpath(KUBERNETES, tmp_path))
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(kubernetes / "overlays/redis-cluster")],
                "components": [
                    str(kubernetes / "components/tls"),
                    str(kubernetes / "components/mtls"),
                ],
            }
        )
    )
    docs = kustomize.render(tmp_path)
    if shutil.which("kubectl"):
        assert _by_identity(docs) == _by_identity(_kubectl_kustomize(tmp_path))
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert configmap["data"]["HERALD_REDIS_CLUSTER"] == "true"
    assert (
        configmap["data"]["HERALD_TLS_CLIENT_CA_FILE"]
        == _tls_files("overlays/mtls")["HERALD_TLS_CLIENT_CA_FILE"]
    )
    mtls = {
        d["metadata"]["name"]: d for d in _rendered("overlays/mtls") if d["kind"] == "Deployment"
    }
    for doc in docs:
        if doc["kind"] == "Deployment":
            assert doc == mtls[doc["metadata"]["name"]]


# -- compose --------------------------------------------------------------------------------


def test_compose_runs_every_service_from_the_one_image() -> None:
    herald = _herald_compose_services()
    assert set(herald) == {*SERVICES, "sandbox"}
    for name, spec in herald.items():
        module = _assert_runs_module(spec["command"])
        assert module == ("services.sandbox" if name == "sandbox" else f"services.{name}")
    assert herald["sandbox"]["command"][3:] == ["serve"]
    assert {"redis", "otel-collector", "jaeger"} <= set(_compose()["services"])


def test_compose_containers_are_locked_down() -> None:
    for name, spec in _compose()["services"].items():
        assert spec.get("read_only") is True, name
        uid = str(spec["user"]).split(":")[0]
        assert uid.isdigit(), f"{name}: numeric user {spec['user']!r}"
        assert int(uid) != 0, f"{name} runs as root"
        assert spec["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in spec["security_opt"], name
        assert not spec.get("privileged"), name
    for name, spec in _herald_compose_services().items():
        assert int(str(spec["user"]).split(":")[0]) == _dockerfile_uid(), name
        assert any(str(t).startswith("/tmp") for t in spec["tmpfs"]), name


def test_compose_sets_only_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    known = _known_variables()
    sandbox_names = _sandbox_variables()
    for name, spec in _herald_compose_services().items():
        env = _compose_environment(spec)
        assert set(env) <= known, f"{name}: unknown {sorted(set(env) - known)}"
        if name == "sandbox":
            assert set(env) <= sandbox_names
            continue
        assert not set(env) & sandbox_names, name
        settings = _load_settings_from(env, monkeypatch)  # values pass validation
        delivery_options.DeliveryOptions.from_env(env)
        assert settings.host == ALL_INTERFACES
        for service in SERVICES:
            host, _, port = getattr(settings, f"{service}_address").rpartition(":")
            assert (host, int(port)) == (service, DEFAULT_PORTS[service]), name
        endpoint = urlsplit(settings.otlp_endpoint)
        assert endpoint.hostname in _compose()["services"], name


def test_compose_keeps_the_credentials_key_out_of_the_file() -> None:
    for name, spec in _herald_compose_services().items():
        value = (spec.get("environment") or {}).get("HERALD_CREDENTIALS_KEY")
        if value is not None:
            assert name == "delivery"
            assert re.fullmatch(r"\$\{HERALD_CREDENTIALS_KEY:\?[^}]+\}", value), value
    assert "HERALD_CREDENTIALS_KEY" in _compose_environment(_compose()["services"]["delivery"])
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert ".env" in ignored


def _volume_mounts(spec: dict[str, Any]) -> dict[str, str]:
    """mount path -> volume name (or host path)."""
    mounts = {}
    for entry in spec.get("volumes", []):
        source, target, *_ = str(entry).split(":")
        mounts[target] = source
    return mounts


def test_compose_wires_delivery_to_the_sandbox() -> None:
    from services.sandbox.pki import SERVER_DNS_NAMES
    from services.sandbox.stack import SandboxPorts

    services = _compose()["services"]
    sandbox, delivery = services["sandbox"], services["delivery"]
    sandbox_env = _compose_environment(sandbox)
    delivery_env = _compose_environment(delivery)

    # Delivery reads the CA from the volume the sandbox writes it into.
    state_dir = sandbox_env["HERALD_SANDBOX_STATE_DIR"]
    volume = _volume_mounts(sandbox)[state_dir]
    assert volume in _compose()["volumes"]
    ca_file = Path(delivery_env["HERALD_PROVIDER_CA_FILE"])
    assert _volume_mounts(delivery)[str(ca_file.parent)] == volume
    assert ca_file.name == "ca.pem"
    assert str(delivery["volumes"][0]).endswith(":ro")

    # Provider origins are names the sandbox answers to (network aliases) and that its
    # certificate covers, on the ports it listens on.
    aliases = set(sandbox["networks"]["default"]["aliases"])
    ports = SandboxPorts.from_env(sandbox_env)
    assert sandbox_env["HERALD_SANDBOX_HOST"] in aliases & set(SERVER_DNS_NAMES)
    origins = {
        "HERALD_APNS_PRODUCTION_ORIGIN": ports.apns,
        "HERALD_APNS_DEVELOPMENT_ORIGIN": ports.apns,
        "HERALD_FCM_ORIGIN": ports.fcm,
    }
    for variable, port in origins.items():
        origin = urlsplit(delivery_env[variable])
        assert origin.scheme == "https", variable
        assert origin.hostname in aliases & set(SERVER_DNS_NAMES), variable
        assert origin.port == port, variable
    assert "sandbox" in delivery["depends_on"]


def test_compose_healthchecks_ask_each_service_on_its_port() -> None:
    for name in SERVICES:
        test = _compose()["services"][name]["healthcheck"]["test"]
        assert test[0] == "CMD", name
        assert _assert_runs_module(test[1:]) == healthcheck.__name__, name
        args = healthcheck.argument_parser().parse_args(test[4:])
        assert args.port == DEFAULT_PORTS[name], name


def test_compose_traces_go_through_the_collector_to_jaeger() -> None:
    services = _compose()["services"]
    mounts = _volume_mounts(services["otel-collector"])
    config_path = (COMPOSE.parent / mounts["/etc/otelcol/config.yaml"]).resolve()
    assert config_path == DEPLOY / "otel-collector.yaml"
    config = yaml.safe_load(config_path.read_text())
    pipeline = config["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        for component in pipeline[kind]:
            assert component in config[kind], f"{component} is not defined"
    assert "otlp" in pipeline["receivers"]
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    endpoints = [config["exporters"][e]["endpoint"] for e in pipeline["exporters"]]
    assert any(e.split(":")[0] == "jaeger" for e in endpoints)
    assert "jaeger" in services


# -- Dockerfile -----------------------------------------------------------------------------


def _dockerfile_uid() -> int:
    _, stages = _dockerfile()
    users = [rest for keyword, rest in stages[-1].instructions if keyword == "USER"]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"USER {users[-1]}: numeric, so runAsNonRoot can verify it"
    return int(uid)


def test_the_dockerfile_builds_in_stages_on_python_slim() -> None:
    _, stages = _dockerfile()
    assert [s.name for s in stages] == ["builder", "runtime"]
    builder, runtime = stages
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", runtime.base), runtime.base
    assert builder.base == runtime.base, "the venv's interpreter must be the runtime's"
    runs = " ".join(rest for keyword, rest in builder.instructions if keyword == "RUN")
    assert "uv sync --locked --no-dev" in runs
    assert "--no-editable" in runs, "the runtime stage copies the venv, not the sources"
    runtime_copies = [rest for keyword, rest in runtime.instructions if keyword == "COPY"]
    assert runtime_copies
    assert all(c.startswith("--from=builder ") for c in runtime_copies)


def test_the_dockerfile_runtime_stage_is_not_root() -> None:
    _, stages = _dockerfile()
    uid = _dockerfile_uid()
    assert uid != 0
    runs = " ".join(rest for keyword, rest in stages[-1].instructions if keyword == "RUN")
    args = dict(rest.split("=", 1) for keyword, rest in stages[-1].instructions if keyword == "ARG")
    created = re.search(r"useradd[^&]*--uid \"?\$\{(\w+)\}\"?", runs)
    assert created, "the runtime stage creates its user with a fixed uid"
    assert int(args[created[1]]) == uid, "USER is the user the stage creates"


def test_the_dockerfile_bakes_in_no_secrets_and_no_local_state() -> None:
    _, stages = _dockerfile()
    known = _known_variables()
    secret_words = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL|REDIS_URL")
    for stage in stages:
        for keyword, rest in stage.instructions:
            if keyword in ("ENV", "ARG"):
                names = _env_pairs(rest) if keyword == "ENV" else {rest.split("=")[0]: ""}
                for name in names:
                    assert not secret_words.search(name), f"{keyword} {name} in the image"
                    if keyword == "ENV" and name.startswith("HERALD_"):
                        assert name in known, f"{keyword} {name} is not a setting"
            if keyword == "COPY" and not rest.startswith("--from="):
                sources = shlex.split(rest)[:-1]
                for source in sources:
                    assert source not in (".", "./"), "COPY of the whole context"
                    assert not source.startswith((".run", ".venv", ".env")), source
    runtime_env: dict[str, str] = {}
    for keyword, rest in stages[-1].instructions:
        if keyword == "ENV":
            runtime_env |= _env_pairs(rest)
    assert runtime_env["PYTHONDONTWRITEBYTECODE"] == "1"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "**/.run" in ignore


def test_the_dockerfile_default_command_is_a_service() -> None:
    _, stages = _dockerfile()
    (command,) = [rest for keyword, rest in stages[-1].instructions if keyword == "CMD"]
    assert _assert_runs_module(_json_command(command)) in {f"services.{s}" for s in SERVICES}
    assert not [k for k, _ in stages[-1].instructions if k == "ENTRYPOINT"]
