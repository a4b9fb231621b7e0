"""deploy/k8s/, offline: every manifest against the Kubernetes API schemas of one pinned version
(kubernetes-validate, strict: unknown fields are errors), KServe's kinds by a structural check of
our own plus their pod parts against the core schemas, and the files against each other (labels,
ports, probes, image, volumes, timings). Each check is also shown to reject a broken copy."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33"  # the API schemas every manifest is validated against
PORT = 3000  # the Bento's port (BentoML's default; the Dockerfile it generates exposes it)
IMAGE = "dlzoo:latest"  # the placeholder; kustomization.yaml's `images:` renames it
MODELS_CLAIM = "dlzoo-models"
KSERVE_MODELS = "/mnt/models"  # where KServe mounts an InferenceService's storageUri
LIVE, READY = "/livez", "/readyz"
# Kinds no Kubernetes schema describes: KServe's CRDs and kustomize's own file.
KSERVE_GROUP = "serving.kserve.io"
NOT_CORE = {
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
    (f"{KSERVE_GROUP}/v1alpha1", "ServingRuntime"),
    (f"{KSERVE_GROUP}/v1beta1", "InferenceService"),
}
# Variables of issue 17 the manifests set before the service reads them (auth, drain).
PENDING_VARIABLES = {"DLZOO_API_TOKEN", "DLZOO_DRAIN_SECONDS"}

# KServe's own fields (the rest are Kubernetes PodSpec / Container fields, validated as a Pod).
RUNTIME_SPEC_KSERVE = {
    "supportedModelFormats",
    "protocolVersions",
    "multiModel",
    "disabled",
    "builtInAdapter",
    "grpcEndpoint",
    "grpcDataEndpoint",
    "httpDataEndpoint",
    "replicas",
    "storageHelper",
    "workerSpec",
    "labels",
    "annotations",
}
RUNTIME_SPEC_POD = {
    "containers",
    "volumes",
    "nodeSelector",
    "affinity",
    "tolerations",
    "imagePullSecrets",
    "schedulerName",
    "hostIPC",
}
PREDICTOR_KSERVE = {
    "model",
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "scaleMetricType",
    "autoScaling",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "deploymentStrategy",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "workerSpec",
    "storageUris",
}
MODEL_KSERVE = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri"}
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # KServe's rule for InferenceService names
# Kubernetes' quantity grammar (resource.Quantity): the schemas only say "string or number".
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[mkMGTPE])?$")

Docs = dict[str, list[dict]]  # file (relative to deploy/k8s) -> its documents


def load() -> Docs:
    files = sorted(K8S.rglob("*.yaml"))
    assert files, f"no manifests under {K8S}"
    return {
        str(f.relative_to(K8S)): [d for d in yaml.safe_load_all(f.read_text()) if d] for f in files
    }


@pytest.fixture(scope="module")
def docs() -> Docs:
    return load()


def each(docs: Docs):
    for name, items in docs.items():
        for doc in items:
            yield name, doc


def find(docs: Docs, kind: str, name: str | None = None) -> list[dict]:
    return [
        d
        for _, d in each(docs)
        if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: Docs, kind: str, name: str | None = None) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def validate(doc: dict) -> str:
    """The Kubernetes version whose schema accepted ``doc``; raises ValidationError otherwise."""
    return kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


# --- the Kubernetes API schemas ------------------------------------------------------------------


def test_every_core_manifest_validates_against_the_pinned_schemas(docs):
    kinds = set()
    for name, doc in each(docs):
        kinds.add(doc["kind"])
        if (doc["apiVersion"], doc["kind"]) in NOT_CORE:
            # Not skipped silently: the library has no schema for exactly these kinds.
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                validate(doc)
            continue
        assert validate(doc) == KUBERNETES_VERSION, name
    assert kinds >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "ServingRuntime",
        "InferenceService",
        "Kustomization",
    }


def _container(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]["containers"][0]


BROKEN: dict[str, tuple[str, str, Callable[[dict], None]]] = {
    "port as a string": (
        "Deployment",
        "dlzoo",
        lambda d: _container(d)["ports"][0].update(containerPort="3000"),
    ),
    "misspelt field": (
        "Deployment",
        "dlzoo-gpu",
        lambda d: _container(d).update(readinesProbe=_container(d).pop("readinessProbe")),
    ),
    "grace period as a string": (
        "Deployment",
        "dlzoo",
        lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSeconds="50s"),
    ),
    "replicas as a string": (
        "HorizontalPodAutoscaler",
        "dlzoo",
        lambda d: d["spec"].update(minReplicas="2"),
    ),
    "selector as a list": (
        "PodDisruptionBudget",
        "dlzoo",
        lambda d: d["spec"].update(selector=["app.kubernetes.io/name=dlzoo"]),
    ),
    "service port as a string": (
        "Service",
        "dlzoo",
        lambda d: d["spec"]["ports"][0].update(port="80"),
    ),
    "access modes as a string": (
        "PersistentVolumeClaim",
        MODELS_CLAIM,
        lambda d: d["spec"].update(accessModes="ReadOnlyMany"),
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_copy_is_rejected(docs, case):
    kind, name, breaks = BROKEN[case]
    doc = copy.deepcopy(one(docs, kind, name))
    validate(doc)  # the original passes...
    breaks(doc)
    with pytest.raises(kubernetes_validate.ValidationError):  # ...its broken copy does not
        validate(doc)


def quantities(doc) -> list[str]:
    """Every resource quantity: requests, limits, emptyDir sizes, storage."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("requests", "limits") and isinstance(v, dict):
                    found.extend(str(q) for q in v.values())
                elif k == "sizeLimit":
                    found.append(str(v))
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    return found


def test_quantities_are_kubernetes_quantities(docs):
    found = [q for _, d in each(docs) for q in quantities(d)]
    assert len(found) >= 10
    bad = [q for q in found if not QUANTITY.match(q)]
    assert not bad, f"not Kubernetes quantities: {bad}"
    assert not [q for q in ("2 cores", "1GB ", "four", "1.5Gb") if QUANTITY.match(q)]


# --- one deployment's own consistency ------------------------------------------------------------


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def port_number(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    return named.get(port)


def pod_problems(
    where: str, pod: dict, container: dict, *, models_volume: bool = True
) -> list[str]:
    """A dlzoo pod: port, probes, drain timing, read-only root with its writable folders, models."""
    problems = []
    ports = [p["containerPort"] for p in container.get("ports", [])]
    if ports[:1] != [PORT]:
        problems.append(f"{where}: first container port {ports[:1]}, not {PORT}")
    if container.get("image") != IMAGE:
        problems.append(f"{where}: image {container.get('image')!r}, not {IMAGE!r}")
    for probe, path in (("livenessProbe", LIVE), ("readinessProbe", READY), ("startupProbe", LIVE)):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or port_number(container, get.get("port")) != PORT:
            problems.append(f"{where}: {probe} is {get}, not {path} on {PORT}")
    env = env_of(container)
    stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = int(stop[1]) if stop[:1] == ["sleep"] and len(stop) == 2 else 0
    drain = int(env.get("DLZOO_DRAIN_SECONDS", {}).get("value", 30))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not sleep:
        problems.append(f"{where}: no preStop sleep before SIGTERM")
    if grace <= sleep + drain:
        problems.append(f"{where}: grace {grace}s <= preStop {sleep}s + drain {drain}s")
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    for key, want in (
        ("runAsNonRoot", True),
        ("runAsUser", 1034),  # the Bento image's `bentoml` user
        ("readOnlyRootFilesystem", True),
        ("allowPrivilegeEscalation", False),
    ):
        if security.get(key) != want:
            problems.append(f"{where}: securityContext.{key} is {security.get(key)}, not {want}")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    home = env.get("BENTOML_HOME", {}).get("value")
    for path in (home, "/tmp"):  # BentoML's home (Prometheus files), its sockets
        mount = mounts.get(path)
        if not mount or "emptyDir" not in volumes.get(mount["name"], {}):
            problems.append(f"{where}: {path} is not a writable emptyDir")
    models = env.get("DLZOO_MODELS", {}).get("value")
    if models_volume:
        mount = mounts.get(models, {})
        claim = volumes.get(mount.get("name"), {}).get("persistentVolumeClaim", {})
        if not (mount.get("readOnly") and claim.get("readOnly")):
            problems.append(f"{where}: DLZOO_MODELS={models} is not a read-only volume mount")
        if claim.get("claimName") != MODELS_CLAIM:
            problems.append(f"{where}: the models volume is not the claim {MODELS_CLAIM}")
    return problems


def deployment_problems(deployment: dict, device: str) -> list[str]:
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    problems = pod_problems(f"Deployment {name}", pod, pod["containers"][0])
    selector = deployment["spec"]["selector"]["matchLabels"]
    if not selector.items() <= labels.items():
        problems.append(f"{name}: selector {selector} does not select its own pods {labels}")
    spread = [c["labelSelector"]["matchLabels"] for c in pod.get("topologySpreadConstraints", [])]
    anti = pod.get("affinity", {}).get("podAntiAffinity")
    if not anti and not any(s.items() <= labels.items() for s in spread):
        problems.append(f"{name}: no topology spread or anti-affinity over its own pods")
    container = pod["containers"][0]
    if env_of(container).get("DLZOO_DEVICE", {}).get("value") != device:
        problems.append(f"{name}: DLZOO_DEVICE is not {device}")
    gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    if (gpus == 1) != (device == "cuda"):
        problems.append(f"{name}: nvidia.com/gpu limit {gpus} with DLZOO_DEVICE={device}")
    if device == "cuda" and not (pod.get("nodeSelector") and pod.get("tolerations")):
        problems.append(f"{name}: a GPU pod without a node selector and a toleration")
    resources = container.get("resources", {})
    if not (resources.get("requests", {}).get("cpu") and resources.get("limits", {}).get("cpu")):
        problems.append(f"{name}: no CPU request and limit")
    return problems


# --- the files together ---------------------------------------------------------------------


def consistency_problems(docs: Docs) -> list[str]:
    cpu, gpu = one(docs, "Deployment", "dlzoo"), one(docs, "Deployment", "dlzoo-gpu")
    problems = deployment_problems(cpu, "cpu") + deployment_problems(gpu, "cuda")
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in (cpu, gpu)}
    service, pdb = one(docs, "Service", "dlzoo"), one(docs, "PodDisruptionBudget")
    selector = service["spec"]["selector"]
    for name, pod in pods.items():
        if not selector.items() <= pod["metadata"]["labels"].items():
            problems.append(f"the Service does not select Deployment {name}'s pods")
        for port in service["spec"]["ports"]:
            if port_number(pod["spec"]["containers"][0], port["targetPort"]) != PORT:
                problems.append(f"Service port {port['port']} misses {PORT} in {name}")
    if [p["port"] for p in service["spec"]["ports"]] != [80] or service["spec"][
        "type"
    ] != "ClusterIP":
        problems.append("the Service is not ClusterIP port 80")
    if pdb["spec"]["selector"].get("matchLabels") != selector:
        problems.append("the PodDisruptionBudget does not select the Service's pods")
    hpa = one(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    if (target["apiVersion"], target["kind"], target["name"]) != ("apps/v1", "Deployment", "dlzoo"):
        problems.append(f"the HPA targets {target}, not the CPU Deployment")
    if "replicas" in cpu["spec"]:
        problems.append("the CPU Deployment fixes replicas that its HPA owns")
    metrics = [
        (m["resource"]["name"], m["resource"]["target"]["type"]) for m in hpa["spec"]["metrics"]
    ]
    if metrics != [("cpu", "Utilization")] or hpa["spec"]["minReplicas"] < 2:
        problems.append(f"the HPA scales on {metrics} from {hpa['spec']['minReplicas']} replicas")
    claim = one(docs, "PersistentVolumeClaim", MODELS_CLAIM)
    if claim["spec"]["accessModes"] != ["ReadOnlyMany"]:
        problems.append(f"the model repository claim is {claim['spec']['accessModes']}")
    return problems + kserve_problems(docs)


def kserve_problems(docs: Docs) -> list[str]:
    """What KServe requires of these two kinds (no schema for them here), and that they run the
    Deployment's image the same way."""
    problems = []
    runtime, isvc = one(docs, "ServingRuntime"), one(docs, "InferenceService")
    for doc, version in ((runtime, "v1alpha1"), (isvc, "v1beta1")):
        if doc["apiVersion"] != f"{KSERVE_GROUP}/{version}":
            problems.append(f"{doc['kind']} is {doc['apiVersion']}, not {KSERVE_GROUP}/{version}")
        if not DNS_1035.match(doc.get("metadata", {}).get("name", "")):
            problems.append(f"{doc['kind']} name is not a DNS-1035 label")
    spec = runtime.get("spec", {})
    if unknown := set(spec) - RUNTIME_SPEC_KSERVE - RUNTIME_SPEC_POD:
        problems.append(f"ServingRuntime.spec has unknown fields {sorted(unknown)}")
    formats = {f.get("name") for f in spec.get("supportedModelFormats", [])}
    if "onnx" not in formats or None in formats:
        problems.append(f"ServingRuntime formats {formats}: onnx, every one named")
    if spec.get("protocolVersions") != ["v2"]:
        problems.append(f"ServingRuntime protocols {spec.get('protocolVersions')}, not [v2]")
    containers = spec.get("containers", [])
    if [c.get("name") for c in containers][:1] != ["kserve-container"]:
        problems.append("the ServingRuntime's first container is not `kserve-container`")
    pod = {"volumes": spec.get("volumes", []), "securityContext": {}, **_predictor_pod(isvc)}
    if containers:
        problems += pod_problems("ServingRuntime", pod, containers[0], models_volume=False)
        models = env_of(containers[0]).get("DLZOO_MODELS", {}).get("value")
        if models != KSERVE_MODELS:
            problems.append(f"ServingRuntime DLZOO_MODELS={models}, not KServe's {KSERVE_MODELS}")
    predictor = isvc.get("spec", {}).get("predictor", {})
    if unknown := set(predictor) - PREDICTOR_KSERVE - POD_SPEC_FIELDS:
        problems.append(f"InferenceService predictor has unknown fields {sorted(unknown)}")
    model = predictor.get("model", {})
    if unknown := set(model) - MODEL_KSERVE - CONTAINER_FIELDS:
        problems.append(f"InferenceService model has unknown fields {sorted(unknown)}")
    if model.get("runtime") != runtime["metadata"]["name"]:
        problems.append(
            f"InferenceService runtime {model.get('runtime')!r} is not the ServingRuntime"
        )
    if model.get("modelFormat", {}).get("name") not in formats:
        problems.append(f"InferenceService format {model.get('modelFormat')} is not the runtime's")
    if model.get("protocolVersion") not in set(spec.get("protocolVersions", [])) & PROTOCOLS:
        problems.append(
            f"InferenceService protocol {model.get('protocolVersion')} not the runtime's"
        )
    if model.get("storageUri") != f"pvc://{MODELS_CLAIM}":
        problems.append(f"InferenceService storageUri {model.get('storageUri')}, not the claim")
    service_selector = one(docs, "Service", "dlzoo")["spec"]["selector"]
    for labels in (isvc["metadata"].get("labels", {}), predictor.get("labels", {})):
        if service_selector.items() <= labels.items():
            problems.append("KServe's pods would join the plain Service and its PDB")
    return problems


def _predictor_pod(isvc: dict) -> dict:
    predictor = isvc.get("spec", {}).get("predictor", {})
    return {k: v for k, v in predictor.items() if k in POD_SPEC_FIELDS}


def _schema_fields(kind: str) -> set[str]:
    """Field names of a core type, from the pinned version's schemas (the package's data)."""
    import json
    from importlib.resources import files

    folder = (
        files("kubernetes_validate") / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}.0-local"
    )
    return set(json.loads((folder / f"{kind}-v1.json").read_text())["properties"])


POD_SPEC_FIELDS = _schema_fields("podspec")
CONTAINER_FIELDS = _schema_fields("container")


def test_the_files_agree(docs):
    assert consistency_problems(docs) == []


def _dep(docs, name="dlzoo"):
    return one(docs, "Deployment", name)


MISMATCHES: dict[str, Callable[[Docs], None]] = {
    "service selects other pods": lambda d: one(d, "Service")["spec"]["selector"].update(app="x"),
    "pdb selects other pods": lambda d: one(d, "PodDisruptionBudget")["spec"]["selector"][
        "matchLabels"
    ].update({"dlzoo/variant": "cpu"}),
    "hpa targets another deployment": lambda d: one(d, "HorizontalPodAutoscaler")["spec"][
        "scaleTargetRef"
    ].update(name="dlzoo-gpu"),
    "readiness on /healthz": lambda d: _container(_dep(d))["readinessProbe"]["httpGet"].update(
        path="/healthz"
    ),
    "probe on another port": lambda d: _container(_dep(d, "dlzoo-gpu"))["livenessProbe"][
        "httpGet"
    ].update(port=8080),
    "grace shorter than the drain": lambda d: _dep(d)["spec"]["template"]["spec"].update(
        terminationGracePeriodSeconds=30
    ),
    "models mounted read-write": lambda d: _container(_dep(d))["volumeMounts"][0].update(
        readOnly=False
    ),
    "writable root": lambda d: _container(_dep(d, "dlzoo-gpu"))["securityContext"].update(
        readOnlyRootFilesystem=False
    ),
    "gpu variant on auto": lambda d: env_of(_container(_dep(d, "dlzoo-gpu")))[
        "DLZOO_DEVICE"
    ].update(value="auto"),
    "gpu limit on the cpu variant": lambda d: _container(_dep(d))["resources"]["limits"].update(
        {"nvidia.com/gpu": 1}
    ),
    "runtime on another port": lambda d: one(d, "ServingRuntime")["spec"]["containers"][0]["ports"][
        0
    ].update(containerPort=8080),
    "runtime runs another image": lambda d: one(d, "ServingRuntime")["spec"]["containers"][
        0
    ].update(image="other:1"),
    "isvc names another runtime": lambda d: one(d, "InferenceService")["spec"]["predictor"][
        "model"
    ].update(runtime="kserve-tritonserver"),
    "isvc asks for v1": lambda d: one(d, "InferenceService")["spec"]["predictor"]["model"].update(
        protocolVersion="v1"
    ),
    "isvc misspelt field": lambda d: one(d, "InferenceService")["spec"]["predictor"][
        "model"
    ].update(storageURI="pvc://dlzoo-models"),
    "runtime misspelt field": lambda d: one(d, "ServingRuntime")["spec"].update(
        protocolVersion=["v2"]
    ),
}


@pytest.mark.parametrize("case", MISMATCHES)
def test_a_mismatch_is_found(docs, case):
    broken = copy.deepcopy(docs)
    MISMATCHES[case](broken)
    assert consistency_problems(broken), f"{case}: not noticed"


def test_kserve_pods_validate_as_core_pods(docs):
    """The KServe kinds have no schema here, but their pod parts are core types: the runtime's
    containers and volumes, the predictor's pod fields and the model's container fields, put
    together as KServe would, validate as a Pod."""
    runtime, isvc = one(docs, "ServingRuntime"), one(docs, "InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    container = {
        **runtime["spec"]["containers"][0],
        **{k: v for k, v in model.items() if k in CONTAINER_FIELDS},
    }
    container["volumeMounts"] = [
        *container.get("volumeMounts", []),
        {"name": "kserve-pvc-source", "mountPath": KSERVE_MODELS, "readOnly": True},
    ]
    claim = {"claimName": MODELS_CLAIM, "readOnly": True}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "dlzoo-predictor"},
        "spec": {
            **{k: v for k, v in runtime["spec"].items() if k in RUNTIME_SPEC_POD},
            **_predictor_pod(isvc),
            "containers": [container],
            "volumes": [
                *runtime["spec"].get("volumes", []),
                {"name": "kserve-pvc-source", "persistentVolumeClaim": claim},
            ],
        },
    }
    assert validate(pod) == KUBERNETES_VERSION
    pod["spec"]["containers"][0]["ports"][0]["containerPort"] = "3000"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)


# --- kustomize ---------------------------------------------------------------------------------


def kustomizations(docs: Docs) -> dict[Path, dict]:
    return {
        (K8S / name).parent: doc for name, doc in each(docs) if doc.get("kind") == "Kustomization"
    }


def test_kustomizations_list_every_manifest_once(docs):
    listed: list[Path] = []
    for folder, kustomization in kustomizations(docs).items():
        for entry in kustomization["resources"]:
            path = (folder / entry).resolve()
            assert path.exists(), f"{folder}: {entry} does not exist"
            if path.is_file():
                listed.append(path)
            else:
                assert (path / "kustomization.yaml").exists(), f"{folder}: {entry} is not a base"
        # one image name everywhere, renamed in one place per kustomization
        assert [i["name"] for i in kustomization.get("images", [])] in ([], [IMAGE.split(":")[0]])
    manifests = [
        (K8S / name).resolve() for name, doc in each(docs) if doc.get("kind") != "Kustomization"
    ]
    assert sorted(listed) == sorted(manifests), "a manifest no kustomization applies, or twice"
    roots = kustomizations(docs)
    assert "common" in roots[K8S]["resources"] and "../common" in roots[K8S / "gpu"]["resources"]
    assert not any("kserve" in str(e) for e in roots[K8S]["resources"]), "KServe needs its CRDs"


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl (its kustomize) is not installed")
@pytest.mark.parametrize("folder", ["", "gpu", "kserve"])
def test_kustomize_renders_valid_manifests(folder):
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rendered = [d for d in yaml.safe_load_all(out) if d]
    kinds = sorted(d["kind"] for d in rendered)
    expected = {
        "": ["Deployment", "HorizontalPodAutoscaler", "PersistentVolumeClaim"],
        "gpu": ["Deployment", "PersistentVolumeClaim"],
        "kserve": ["InferenceService", "ServingRuntime"],
    }[folder]
    if folder != "kserve":
        expected = sorted([*expected, "PodDisruptionBudget", "Service"])
    assert kinds == expected
    for doc in rendered:
        if (doc["apiVersion"], doc["kind"]) not in NOT_CORE:
            assert validate(doc) == KUBERNETES_VERSION


# --- the service's own variables ------------------------------------------------------------


def test_every_dlzoo_variable_is_one_the_service_reads(docs):
    from service.settings import VARIABLES

    known = {v.name for v in VARIABLES} | PENDING_VARIABLES
    used = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("name"), str) and node["name"].startswith("DLZOO_"):
                used.add(node["name"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for _, doc in each(docs):
        walk(doc)
    assert {"DLZOO_MODELS", "DLZOO_DEVICE"} <= used
    assert used <= known, f"not service variables: {sorted(used - known)}"
