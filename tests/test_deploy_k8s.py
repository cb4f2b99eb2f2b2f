"""The Kubernetes files in deploy/: kubernetes.yaml (Envoy with llmtally as a native sidecar),
envoy-gateway.yaml and istio.yaml (llmtally behind the two common control planes).

Offline: every built-in object validates with kubernetes-validate; every container runs under the
restricted Pod Security profile; probes, Services and the NetworkPolicy name ports that exist and
that the processes listen on; envoy.json in the ConfigMap is exactly what the command documented
in the manifest prints, and Envoy accepts it as the pod runs it; the control planes' resources
carry the fields docs/envoy.md lists for them, and the Envoy configuration inside them (or that
they translate to) passes `envoy --mode validate`.

Running: llmtally serve with the manifest's llmtally.yaml and Envoy with the manifest's arguments
(the bootstrap made by the same command, its upstreams on a loopback mock) answer the probes, use
the memory the manifest's resources are sized from, and the preStop hook drains Envoy without
cutting a stream.

`python tests/test_deploy_k8s.py --regenerate` rewrites envoy.json in kubernetes.yaml from the
documented command, for when `llmtally envoy-config` changes."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MANIFEST = DEPLOY / "kubernetes.yaml"
CONTROL_PLANES = ("envoy-gateway.yaml", "istio.yaml")
#: the built-in kinds kubernetes-validate has schemas for (the rest are CRDs, checked field by field below)
BUILT_IN = {"ConfigMap", "Deployment", "Service", "NetworkPolicy"}
EXT_PROC = "envoy.filters.http.ext_proc"
HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def docs_of(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def pod_spec(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(spec: dict, name: str) -> dict:
    return next(c for c in containers(spec) if c["name"] == name)


def mib(quantity: str) -> float:
    units = {"Ki": 2**-10, "Mi": 1, "Gi": 2**10}
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    assert m, quantity
    return int(m[1]) * units[m[2]]


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


# -- the documented command and the bootstrap in the ConfigMap --


def documented_command(text: str | None = None) -> list[str]:
    """The `llmtally envoy-config ...` command written in kubernetes.yaml's header, as argv."""
    text = MANIFEST.read_text() if text is None else text
    m = re.search(r"^# envoy-config command:\n((?:#   .*\n)+)# end of command$", text, re.M)
    assert m, "kubernetes.yaml names the command that prints envoy.json"
    argv = shlex.split(" ".join(line[4:] for line in m[1].splitlines()))
    assert argv[:2] == ["llmtally", "envoy-config"], argv
    return argv


def run_envoy_config(args: list[str]) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "llmtally.cli", "envoy-config", *args], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def configmap_bootstrap(docs: list[dict]) -> dict:
    return json.loads(one(docs, "ConfigMap")["data"]["envoy.json"])


def hcm_of(bootstrap: dict, listener: str = "ai_gateway") -> dict:
    lst = next(x for x in bootstrap["static_resources"]["listeners"] if x["name"] == listener)
    return next(f for f in lst["filter_chains"][0]["filters"] if f["name"] == HCM)["typed_config"]


def ext_proc_of(bootstrap: dict) -> dict:
    return next(f for f in hcm_of(bootstrap)["http_filters"] if f["name"] == EXT_PROC)["typed_config"]


def regenerate() -> None:
    """Rewrite envoy.json in kubernetes.yaml with what the documented command prints now."""
    text = MANIFEST.read_text()
    out = run_envoy_config(documented_command(text)[2:])
    block = "".join(f"    {line}\n" if line else "\n" for line in out.rstrip("\n").split("\n"))
    new, n = re.subn(
        r"(?m)^  envoy\.json: \|\n(?:(?:    .*)?\n)+?(?=---\n)", lambda _: "  envoy.json: |\n" + block, text
    )
    assert n == 1, "no envoy.json block in kubernetes.yaml"
    MANIFEST.write_text(new)


def envoy_args(docs: list[dict]) -> list[str]:
    return container(pod_spec(docs), "envoy")["args"]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def health_overlay(docs: list[dict]) -> dict:
    """The bootstrap fragment the Envoy container merges in with --config-yaml."""
    return yaml.safe_load(flag(envoy_args(docs), "--config-yaml"))


def prestop_script(docs: list[dict]) -> str:
    cmd = container(pod_spec(docs), "envoy")["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[:2] == ["/bin/bash", "-c"], cmd
    return cmd[2]


def envoy_binary() -> str:
    from llmtally.demo.envoy_runner import envoy_binary as find

    return find()


def envoy_validate(tmp_path: pathlib.Path, bootstrap: dict | str, *args: str) -> None:
    path = tmp_path / f"validate-{time.monotonic_ns()}.json"
    path.write_text(bootstrap if isinstance(bootstrap, str) else json.dumps(bootstrap))
    r = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), *args], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


# -- offline: the Kubernetes objects --


def kubernetes_versions() -> list[str]:
    """1.30 (native sidecars on by default since 1.29) and the newest schema kubernetes-validate ships."""
    import kubernetes_validate.utils as kv

    newest = max(kv.all_versions(), key=lambda v: tuple(int(x) for x in v.split(".")))
    return sorted({"1.30.0", newest})


@pytest.mark.parametrize("name", ["kubernetes.yaml", *CONTROL_PLANES])
def test_every_built_in_object_validates_against_kubernetes(name):
    import kubernetes_validate

    docs = docs_of(name)
    built_in = [d for d in docs if d["kind"] in BUILT_IN]
    assert {d["kind"] for d in built_in} == BUILT_IN, name
    for version in kubernetes_versions():
        for d in built_in:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise AssertionError(f"{name}: {d['kind']}/{d['metadata']['name']} on {version}: {e}") from e
    assert all(d["metadata"].get("namespace") for d in docs), "every object names its namespace"


#: the volume types the restricted profile allows
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected"}
RESTRICTED_VOLUMES |= {"secret"}


@pytest.mark.parametrize("name", ["kubernetes.yaml", *CONTROL_PLANES])
def test_every_container_runs_under_the_restricted_profile(name):
    """Pod Security's restricted profile, container by container (each states every setting itself), with a
    read-only root whose writable paths are emptyDirs, and requests and limits on every container."""
    spec = pod_spec(docs_of(name))
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key), key
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec.get("automountServiceAccountToken") is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    for v in volumes.values():
        kinds = set(v) - {"name"}
        assert kinds <= RESTRICTED_VOLUMES, (v["name"], kinds)
    assert not spec.get("ephemeralContainers")
    for c in containers(spec):
        sc = c["securityContext"]
        where = f"{name}: {c['name']}"
        assert sc["runAsNonRoot"] is True, where
        assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert not sc.get("privileged"), where
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert not any(p.get("hostPort") for p in c.get("ports", [])), where
        for m in c.get("volumeMounts", []):  # what is writable is an emptyDir; configuration is mounted read-only
            assert "emptyDir" in volumes[m["name"]] or m.get("readOnly") is True, (where, m)
        res = c["resources"]
        assert {"cpu", "memory"} <= set(res["requests"]) and "memory" in res["limits"], where
        assert mib(res["limits"]["memory"]) >= mib(res["requests"]["memory"]), where
    # llmtally's temporary directory (the metrics directory of workers > 1) is a writable emptyDir
    sidecar = container(spec, "llmtally")
    tmpdir = next(e["value"] for e in sidecar["env"] if e["name"] == "TMPDIR")
    assert any(m["mountPath"] == tmpdir and "emptyDir" in volumes[m["name"]] for m in sidecar["volumeMounts"])


def container_port(c: dict, port: int | str) -> int:
    """The containerPort a probe or targetPort names (by number or by name) in a container."""
    for p in c.get("ports", []):
        if port in (p["containerPort"], p.get("name")):
            return p["containerPort"]
    raise AssertionError(f"{c['name']} has no port {port!r}")


def probes(c: dict) -> dict[str, dict]:
    return {k: c[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in c}


def probe_port(probe: dict) -> int | str:
    (kind,) = {"httpGet", "grpc", "tcpSocket", "exec"} & set(probe)
    assert kind != "exec"
    return probe[kind]["port"]


@pytest.mark.parametrize("name", ["kubernetes.yaml", *CONTROL_PLANES])
def test_probes_services_and_network_policy_name_ports_that_exist(name):
    docs = docs_of(name)
    spec = pod_spec(docs)
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert one(docs, "Deployment")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for c in containers(spec):
        assert probes(c), f"{c['name']} has probes"
        for p in probes(c).values():
            container_port(c, probe_port(p))  # raises if the container has no such port
    svc = one(docs, "Service")
    assert svc["spec"]["selector"].items() <= labels.items()
    targets = set()
    for p in svc["spec"]["ports"]:
        targets |= {container_port(c, p["targetPort"]) for c in containers(spec) if _has_port(c, p["targetPort"])}
    assert len(targets) == len(svc["spec"]["ports"]), "every Service port reaches a container port"
    netpol = one(docs, "NetworkPolicy")
    assert netpol["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    allowed = {p["port"] for rule in netpol["spec"]["ingress"] for p in rule["ports"]}
    assert targets <= allowed, "the NetworkPolicy admits every Service port"
    # what llmtally listens on is what the probes and the Service use
    cfg = yaml.safe_load(one(docs, "ConfigMap")["data"]["llmtally.yaml"])
    sidecar = container(spec, "llmtally")
    metrics = port_of(cfg["metricsAddr"])
    assert cfg["metricsAddr"].startswith("0.0.0.0:")  # the kubelet probes the pod's address
    for kind, p in probes(sidecar).items():
        assert container_port(sidecar, probe_port(p)) in (metrics, port_of(cfg["listen"])), kind
        if "grpc" in p:  # a gRPC probe needs ext_proc on the pod's address
            assert cfg["listen"].startswith("0.0.0.0:") and p["grpc"]["port"] == port_of(cfg["listen"])


def _has_port(c: dict, port: int | str) -> bool:
    return any(port in (p["containerPort"], p.get("name")) for p in c.get("ports", []))


def test_the_sidecar_pod_wiring():
    """llmtally is a native sidecar with a startup probe (Envoy starts once ext_proc serves); its gRPC port is on
    loopback and is neither a container port nor admitted by the NetworkPolicy; Envoy reaches it there, its listener
    is the http port, its readiness probe is the health listener merged in with --config-yaml, which proxies only
    /ready to the admin interface, itself on loopback."""
    docs = docs_of("kubernetes.yaml")
    spec = pod_spec(docs)
    assert [c["name"] for c in spec["initContainers"]] == ["llmtally"]
    assert [c["name"] for c in spec["containers"]] == ["envoy"]
    sidecar, envoy = spec["initContainers"][0], spec["containers"][0]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert (sidecar["readinessProbe"]["httpGet"]["path"], sidecar["livenessProbe"]["httpGet"]["path"]) == (
        "/readyz",
        "/healthz",
    )
    cfg = yaml.safe_load(one(docs, "ConfigMap")["data"]["llmtally.yaml"])
    assert cfg["listen"] == "127.0.0.1:18080"
    netpol = one(docs, "NetworkPolicy")
    exposed = {p["port"] for rule in netpol["spec"]["ingress"] for p in rule["ports"]}
    exposed |= {p["containerPort"] for c in containers(spec) for p in c["ports"]}
    boot = configmap_bootstrap(docs)
    admin = boot["admin"]["address"]["socket_address"]
    assert admin["address"] == "127.0.0.1" and {18080, admin["port_value"]}.isdisjoint(exposed)
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    llmtally = clusters["llmtally"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert f"{llmtally['socket_address']['address']}:{llmtally['socket_address']['port_value']}" == cfg["listen"]
    listener = boot["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert container_port(envoy, "http") == listener["port_value"]
    # the health listener: the readiness probe's port, one route (/ready) to a cluster that is the admin address
    overlay = health_overlay(docs)
    (health,) = overlay["static_resources"]["listeners"]
    assert envoy["readinessProbe"]["httpGet"] == {
        "path": "/ready",
        "port": health["address"]["socket_address"]["port_value"],
    }
    hcm = health["filter_chains"][0]["filters"][0]["typed_config"]
    (route,) = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert route == {"match": {"path": "/ready"}, "route": {"cluster": "envoy_admin"}}
    (cluster,) = overlay["static_resources"]["clusters"]
    target = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert cluster["name"] == "envoy_admin" and target == admin
    assert f"/dev/tcp/127.0.0.1/{admin['port_value']}" in prestop_script(docs)
    # the volume: Envoy reads envoy.json from the ConfigMap, llmtally its llmtally.yaml
    mounts = {m["name"]: m["mountPath"] for m in envoy["volumeMounts"]}
    assert flag(envoy["args"], "-c") == f"{mounts['config']}/envoy.json"
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    assert sidecar["args"] == ["serve", "--config", f"{mounts['config']}/llmtally.yaml"]


def test_the_configmap_llmtally_yaml_loads():
    """llmtally accepts its configuration (the same loader as `llmtally serve`), and Envoy's ext_proc timeout is
    the one it expects."""
    from llmtally import config

    for name in ("kubernetes.yaml", *CONTROL_PLANES):
        text = one(docs_of(name), "ConfigMap")["data"]["llmtally.yaml"]
        path = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"llmtally-k8s-{os.getpid()}.yaml"
        path.write_text(text)
        try:
            cfg = config.load(str(path), environ={})
        finally:
            path.unlink()
        assert cfg.workers == 1 or cfg.rate_limit is None or cfg.rate_limit.redis, name
        if name == "kubernetes.yaml":
            boot = configmap_bootstrap(docs_of(name))
            assert ext_proc_of(boot)["message_timeout"] == f"{cfg.message_timeout_seconds:g}s"


def test_envoy_json_is_what_the_documented_command_prints():
    """Exactly, character for character: `python tests/test_deploy_k8s.py --regenerate` rewrites it."""
    docs = docs_of("kubernetes.yaml")
    printed = run_envoy_config(documented_command()[2:])
    assert one(docs, "ConfigMap")["data"]["envoy.json"] == printed, (
        "envoy.json differs from what the documented command prints: python tests/test_deploy_k8s.py --regenerate"
    )


def test_the_docs_show_the_documented_command():
    text = (ROOT / "docs" / "envoy.md").read_text()
    section = text[text.index("\n## Kubernetes\n") :]
    shown = re.search(r"```sh\n(llmtally envoy-config .*?)\n```", section, re.S)
    assert shown and shlex.split(shown[1].replace("\\\n", " ")) == documented_command()


def test_envoy_accepts_the_bootstrap_as_the_pod_runs_it(tmp_path):
    """envoy.json from the ConfigMap with the container's own arguments (the merged health listener, the drain,
    no hot restart, the concurrency), in Envoy's validate mode."""
    docs = docs_of("kubernetes.yaml")
    args = list(envoy_args(docs))
    path = tmp_path / "envoy.json"
    path.write_text(one(docs, "ConfigMap")["data"]["envoy.json"])
    args[args.index("-c") + 1] = str(path)
    r = subprocess.run([envoy_binary(), "--mode", "validate", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "loading 2 listener(s)" in r.stdout + r.stderr  # ai_gateway and the health listener


def test_the_drain_covers_the_longest_stream():
    """The preStop waits the drain time and then up to the routes' timeout for open streams; the grace period
    covers that and llmtally's shutdownGraceSeconds after it; the preStop counts the requests of the listener the
    bootstrap names."""
    docs = docs_of("kubernetes.yaml")
    spec = pod_spec(docs)
    args = envoy_args(docs)
    script = prestop_script(docs)
    drain = int(flag(args, "--drain-time-s"))
    assert flag(args, "--drain-strategy") == "immediate"
    assert re.search(rf"^DRAIN={drain}$", script, re.M), "the preStop waits Envoy's drain time"
    wait = int(re.search(r"\$\(seq 1 (\d+)\)", script)[1])
    boot = configmap_bootstrap(docs)
    routes = hcm_of(boot)["route_config"]["virtual_hosts"][0]["routes"]
    longest = max(int(r["route"]["timeout"].rstrip("s")) for r in routes)
    assert drain + wait >= longest
    cfg = yaml.safe_load(one(docs, "ConfigMap")["data"]["llmtally.yaml"])
    assert spec["terminationGracePeriodSeconds"] > drain + wait + cfg["shutdownGraceSeconds"]
    assert f"http\\.{hcm_of(boot)['stat_prefix']}\\.downstream_rq_active" in script
    for step in ("POST /healthcheck/fail", "POST '/drain_listeners?graceful'"):
        assert step in script


# -- offline: the control planes --


class Obj:
    """A resource's documented fields: the keys it may have, those it must have."""

    def __init__(self, required=(), **fields):
        self.required, self.fields = set(required), fields


class List:
    def __init__(self, item, min_items=0, max_items=None):
        self.item, self.min_items, self.max_items = item, min_items, max_items


class Enum:
    def __init__(self, *values):
        self.values = values


class Pattern:
    def __init__(self, regex):
        self.regex = regex


Map = object()  # a string-to-string map


def check(value, schema, where="") -> None:
    if isinstance(schema, Obj):
        assert isinstance(value, dict), where
        assert schema.required <= set(value), f"{where}: missing {schema.required - set(value)}"
        assert set(value) <= set(schema.fields), f"{where}: undocumented {set(value) - set(schema.fields)}"
        for k, v in value.items():
            check(v, schema.fields[k], f"{where}.{k}")
    elif isinstance(schema, List):
        assert isinstance(value, list) and len(value) >= schema.min_items, where
        assert schema.max_items is None or len(value) <= schema.max_items, where
        for i, v in enumerate(value):
            check(v, schema.item, f"{where}[{i}]")
    elif isinstance(schema, Enum):
        assert value in schema.values, f"{where}: {value!r} not one of {schema.values}"
    elif isinstance(schema, Pattern):
        assert isinstance(value, str) and re.fullmatch(schema.regex, value), f"{where}: {value!r}"
    elif schema is Map:
        assert isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    else:
        assert isinstance(value, schema) and not (schema is int and isinstance(value, bool)), f"{where}: {value!r}"


TARGET_REFS = List(
    Obj(
        {"group", "kind", "name"}, group=Enum("gateway.networking.k8s.io"), kind=Enum("Gateway", "HTTPRoute"), name=str
    ),
    min_items=1,
)
BODY_MODE = Enum("Streamed", "Buffered", "BufferedPartial", "FullDuplexStreamed")
METADATA = {"name": str, "namespace": str}
#: Envoy Gateway v1alpha1, the fields these examples use (api/v1alpha1 of envoyproxy/gateway; docs/envoy.md)
ENVOY_GATEWAY = {
    "EnvoyExtensionPolicy": Obj(
        {"targetRefs", "extProc"},
        targetRefs=TARGET_REFS,
        extProc=List(
            Obj(
                {"backendRefs"},
                backendRefs=List(Obj({"name", "port"}, name=str, port=int, kind=Enum("Service")), 1, 1),
                failOpen=bool,
                messageTimeout=Pattern(r"([0-9]{1,5}(h|m|s|ms)){1,4}"),
                processingMode=Obj(
                    (),
                    request=Obj((), body=BODY_MODE, attributes=List(str)),
                    response=Obj((), body=BODY_MODE, attributes=List(str)),
                    allowModeOverride=bool,
                ),
                metadata=Obj((), accessibleNamespaces=List(str), writableNamespaces=List(str, max_items=8)),
            ),
            min_items=1,
        ),
    ),
    "SecurityPolicy": Obj(
        {"targetRefs", "jwt"},
        targetRefs=TARGET_REFS,
        jwt=Obj(
            {"providers"},
            providers=List(
                Obj(
                    {"name"},
                    name=str,
                    issuer=str,
                    audiences=List(str, max_items=8),
                    remoteJWKS=Obj({"uri"}, uri=Pattern(r"https://.+")),
                    extractFrom=Obj((), headers=List(Obj({"name"}, name=str, valuePrefix=str))),
                    claimToHeaders=List(Obj({"header", "claim"}, header=str, claim=str)),
                ),
                1,
                4,
            ),
        ),
    ),
    "BackendTrafficPolicy": Obj(
        {"targetRefs", "rateLimit"},
        targetRefs=TARGET_REFS,
        rateLimit=Obj(
            {"global"},
            type=Enum("Global"),
            **{
                "global": Obj(
                    {"rules"},
                    rules=List(
                        Obj(
                            {"limit"},
                            clientSelectors=List(
                                Obj(
                                    {"headers"},
                                    headers=List(
                                        Obj({"name"}, name=str, type=Enum("Exact", "RegularExpression", "Distinct"))
                                    ),
                                ),
                                max_items=8,
                            ),
                            limit=Obj(
                                {"requests", "unit"},
                                requests=int,
                                unit=Enum("Second", "Minute", "Hour", "Day", "Month", "Year"),
                            ),
                            cost=Obj(
                                (),
                                request=Obj({"from"}, **{"from": Enum("Number")}, number=int),
                                response=Obj(
                                    {"from", "metadata"},
                                    **{"from": Enum("Metadata")},
                                    metadata=Obj({"namespace", "key"}, namespace=str, key=str),
                                ),
                            ),
                        ),
                        1,
                        128,
                    ),
                )
            },
        ),
    ),
    "EnvoyProxy": Obj(
        {"telemetry"},
        telemetry=Obj(
            {"accessLog"},
            accessLog=Obj(
                {"settings"},
                settings=List(
                    Obj(
                        {"format", "sinks"},
                        format=Obj({"type", "json"}, type=Enum("JSON"), json=Map),
                        sinks=List(Obj({"type", "file"}, type=Enum("File"), file=Obj({"path"}, path=str)), 1),
                    ),
                    1,
                ),
            ),
        ),
    ),
}


def crds(name: str) -> list[dict]:
    return [d for d in docs_of(name) if d["kind"] not in BUILT_IN]


def generated_bootstrap() -> dict:
    return json.loads(one(docs_of("kubernetes.yaml"), "ConfigMap")["data"]["envoy.json"])


def test_envoy_gateway_resources_have_the_documented_fields():
    found = {d["kind"]: d for d in crds("envoy-gateway.yaml")}
    assert set(found) == set(ENVOY_GATEWAY)
    for kind, d in found.items():
        assert d["apiVersion"] == "gateway.envoyproxy.io/v1alpha1", kind
        check(d["metadata"], Obj({"name", "namespace"}, **METADATA), f"{kind}.metadata")
        check(d["spec"], ENVOY_GATEWAY[kind], f"{kind}.spec")
    (ep,) = found["EnvoyExtensionPolicy"]["spec"]["extProc"]
    assert not any(n.startswith("envoy.filters.http") for n in ep["metadata"]["writableNamespaces"])
    # the ext_proc backend is the Service, its gRPC port
    docs = docs_of("envoy-gateway.yaml")
    (ref,) = ep["backendRefs"]
    svc = one(docs, "Service")
    assert ref["name"] == svc["metadata"]["name"] and ref["port"] in {p["port"] for p in svc["spec"]["ports"]}
    cfg = yaml.safe_load(one(docs, "ConfigMap")["data"]["llmtally.yaml"])
    assert cfg["listen"] == f"0.0.0.0:{ref['port']}"
    # one route for all three policies; the rate limit charges what llmtally writes, for the team header
    # the JWT sets; llmtally's team label reads the claims Envoy Gateway writes under the issuer
    targets = {json.dumps(d["spec"]["targetRefs"]) for k, d in found.items() if k != "EnvoyProxy"}
    assert len(targets) == 1
    (rule,) = found["BackendTrafficPolicy"]["spec"]["rateLimit"]["global"]["rules"]
    assert rule["cost"]["response"]["metadata"] == {"namespace": "envoy.ratelimit", "key": "hits_addend"}
    assert rule["cost"]["request"] == {"from": "Number", "number": 0}
    (provider,) = found["SecurityPolicy"]["spec"]["jwt"]["providers"]
    headers = {h["claim"]: h["header"] for h in provider["claimToHeaders"]}
    assert rule["clientSelectors"][0]["headers"][0]["name"] == headers["team"]
    (label,) = cfg["stats"]["customLabels"]
    assert label["metadataKey"].split(label["keyDelimiter"]) == [provider["issuer"], "team"]


def envoy_gateway_ext_proc(ep: dict, cluster: str) -> dict:
    """The ext_proc filter Envoy Gateway builds from one extProc entry (its translator: a processingMode side that
    is present sends its headers, body modes by name, trailers skipped, allowModeOverride as is; failOpen,
    messageTimeout; accessible and writable namespaces are Envoy's forwarding and receiving ones)."""
    body = {"Streamed": "STREAMED", "Buffered": "BUFFERED", "BufferedPartial": "BUFFERED_PARTIAL"}
    pm = ep.get("processingMode", {})
    mode = {}
    for side in ("request", "response"):
        mode[f"{side}_header_mode"] = "SEND" if side in pm else "SKIP"
        mode[f"{side}_body_mode"] = body[pm[side]["body"]] if "body" in pm.get(side, {}) else "NONE"
    mode |= {"request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}
    md = ep.get("metadata", {})
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "grpc_service": {"envoy_grpc": {"cluster_name": cluster}, "timeout": "10s"},
        "failure_mode_allow": ep.get("failOpen", False),
        "message_timeout": ep.get("messageTimeout", "0.2s"),
        "allow_mode_override": pm.get("allowModeOverride", False),
        "processing_mode": mode,
        "metadata_options": {
            "forwarding_namespaces": {"untyped": md.get("accessibleNamespaces", [])},
            "receiving_namespaces": {"untyped": md.get("writableNamespaces", [])},
        },
    }


def minimal_bootstrap(http_filters: list[dict], clusters: list[dict], routes=None, access_log=None) -> dict:
    """A listener on loopback with these filters (the router last) and routes, an upstream cluster, and these."""
    upstream = {
        "name": "upstream",
        "type": "STATIC",
        "load_assignment": {
            "cluster_name": "upstream",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9}}}}
                    ]
                }
            ],
        },
    }
    routes = routes or [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "test",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
        "http_filters": [
            *http_filters,
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    if access_log:
        hcm["access_log"] = access_log
    listener = {
        "name": "test",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
        "filter_chains": [{"filters": [{"name": HCM, "typed_config": hcm}]}],
    }
    return {"static_resources": {"listeners": [listener], "clusters": [*clusters, upstream]}}


def llmtally_cluster() -> dict:
    return next(c for c in generated_bootstrap()["static_resources"]["clusters"] if c["name"] == "llmtally")


def test_envoy_gateway_ext_proc_is_llmtallys_and_envoy_accepts_it(tmp_path):
    """What the EnvoyExtensionPolicy translates to has the generated bootstrap's modes, fail-open, message timeout
    and namespaces (Envoy Gateway sets its own gRPC timeout and cluster), and Envoy accepts it; so does the
    EnvoyProxy's access-log format, which has every key of the generated one."""
    found = {d["kind"]: d for d in crds("envoy-gateway.yaml")}
    (ep,) = found["EnvoyExtensionPolicy"]["spec"]["extProc"]
    translated = envoy_gateway_ext_proc(ep, "llmtally")
    ours = ext_proc_of(generated_bootstrap())
    for key in ("processing_mode", "allow_mode_override", "failure_mode_allow", "message_timeout", "metadata_options"):
        assert translated[key] == ours[key], key
    (setting,) = found["EnvoyProxy"]["spec"]["telemetry"]["accessLog"]["settings"]
    fmt = setting["format"]["json"]
    generated = hcm_of(generated_bootstrap())["access_log"][0]["typed_config"]["log_format"]["json_format"]
    assert set(fmt) == set(generated)
    assert {k: v for k, v in fmt.items() if k not in ("user", "team")} == {
        k: v for k, v in generated.items() if k not in ("user", "team")
    }
    access_log = [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": setting["sinks"][0]["file"]["path"],
                "log_format": {"json_format": fmt},
            },
        }
    ]
    boot = minimal_bootstrap([{"name": EXT_PROC, "typed_config": translated}], [llmtally_cluster()], None, access_log)
    envoy_validate(tmp_path, boot)


#: Istio networking.istio.io/v1alpha3 EnvoyFilter, the fields this example uses (docs/envoy.md)
ISTIO_ENVOY_FILTER = Obj(
    {"configPatches"},
    workloadSelector=Obj({"labels"}, labels=Map),
    configPatches=List(
        Obj(
            {"applyTo", "match", "patch"},
            applyTo=Enum("HTTP_FILTER", "CLUSTER", "HTTP_ROUTE", "LISTENER", "FILTER_CHAIN", "NETWORK_FILTER"),
            match=Obj(
                {"context"},
                context=Enum("ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"),
                listener=Obj(
                    (),
                    portNumber=int,
                    filterChain=Obj((), filter=Obj({"name"}, name=str, subFilter=Obj({"name"}, name=str))),
                ),
                routeConfiguration=Obj((), vhost=Obj((), name=str, route=Obj((), name=str))),
                cluster=Obj((), name=str, service=str, portNumber=int),
            ),
            patch=Obj(
                {"operation", "value"},
                operation=Enum("MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE"),
                value=dict,
            ),
        ),
        min_items=1,
    ),
)


def istio_patches() -> dict[str, list[dict]]:
    (ef,) = crds("istio.yaml")
    assert (ef["apiVersion"], ef["kind"]) == ("networking.istio.io/v1alpha3", "EnvoyFilter")
    check(ef["metadata"], Obj({"name", "namespace"}, **METADATA), "EnvoyFilter.metadata")
    check(ef["spec"], ISTIO_ENVOY_FILTER, "EnvoyFilter.spec")
    by: dict[str, list[dict]] = {}
    for p in ef["spec"]["configPatches"]:
        by.setdefault(p["applyTo"], []).append(p)
    return by


def test_istio_envoy_filter_is_llmtallys_filter_before_the_router():
    by = istio_patches()
    (f,) = by["HTTP_FILTER"]
    assert f["patch"]["operation"] == "INSERT_BEFORE" and f["match"]["context"] == "GATEWAY"
    chain = f["match"]["listener"]["filterChain"]["filter"]
    assert chain == {"name": HCM, "subFilter": {"name": "envoy.filters.http.router"}}
    assert f["patch"]["value"]["name"] == EXT_PROC
    # the same settings as llmtally envoy-config's bootstrap, cluster name included
    assert f["patch"]["value"]["typed_config"] == ext_proc_of(generated_bootstrap())
    (c,) = by["CLUSTER"]
    assert c["patch"]["operation"] == "ADD"
    cluster = c["patch"]["value"]
    assert cluster["name"] == f["patch"]["value"]["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    assert cluster["typed_extension_protocol_options"] == llmtally_cluster()["typed_extension_protocol_options"]
    docs = docs_of("istio.yaml")
    svc = one(docs, "Service")
    addr = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert addr["address"] == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
    assert addr["port_value"] in {p["port"] for p in svc["spec"]["ports"]}
    # the providers per route, as the generated bootstrap sends them
    import llmtally

    for r in by["HTTP_ROUTE"]:
        assert r["patch"]["operation"] == "MERGE"
        per_route = r["patch"]["value"]["typed_per_filter_config"][EXT_PROC]
        (md,) = per_route["overrides"]["grpc_initial_metadata"]
        assert md["key"] == "x-llm-provider" and md["value"] in llmtally.PROVIDERS and md["value"] != "auto"


def test_istio_fragments_validate_with_envoy(tmp_path):
    """The filter, the cluster and the per-route overrides, in one bootstrap: Envoy accepts it."""
    by = istio_patches()
    filt = by["HTTP_FILTER"][0]["patch"]["value"]
    cluster = by["CLUSTER"][0]["patch"]["value"]
    routes = [
        {
            "name": r["match"]["routeConfiguration"]["vhost"]["route"]["name"],
            "match": {"prefix": f"/{i}"},
            "route": {"cluster": "upstream"},
            **r["patch"]["value"],
        }
        for i, r in enumerate(by["HTTP_ROUTE"])
    ]
    envoy_validate(tmp_path, minimal_bootstrap([filt], [cluster], routes))


# -- running: the pod's processes on loopback --


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} appears {text.count(old)} times"
    return text.replace(old, new)


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except (OSError, urllib.error.HTTPError):
            if time.time() > deadline:
                raise
            time.sleep(0.1)


class Pod:
    """The mock upstream, llmtally serve with the ConfigMap's llmtally.yaml and Envoy with the container's
    arguments, on loopback ports: the bootstrap is the documented command's with its upstreams on the mock over
    plain HTTP, no JWT (no identity provider here) and the pod's ports moved; the drain time is 2 s."""

    DRAIN = 2

    def __init__(self, workdir: pathlib.Path):
        self.dir = workdir
        self.docs = docs_of("kubernetes.yaml")
        self.procs: list[subprocess.Popen] = []
        p = {k: free_port() for k in ("upstream", "grpc", "metrics", "listen", "admin", "health")}
        self.ports = p
        self.procs.append(
            self._spawn("upstream", [sys.executable, "-m", "llmtally.demo.upstream", "--port", str(p["upstream"])])
        )
        cfg = one(self.docs, "ConfigMap")["data"]["llmtally.yaml"]
        cfg = replace_once(cfg, "listen: 127.0.0.1:18080", f"listen: 127.0.0.1:{p['grpc']}")
        cfg = replace_once(cfg, "metricsAddr: 0.0.0.0:9092", f"metricsAddr: 127.0.0.1:{p['metrics']}")
        (workdir / "llmtally.yaml").write_text(cfg)
        self.serve = self._spawn(
            "llmtally", [sys.executable, "-m", "llmtally.cli", "serve", "--config", str(workdir / "llmtally.yaml")]
        )
        self.procs.append(self.serve)
        wait_http(f"http://127.0.0.1:{p['metrics']}/readyz")
        self.envoy = self._spawn("envoy", [envoy_binary(), *self.envoy_args()])
        self.procs.append(self.envoy)
        wait_http(f"http://127.0.0.1:{p['admin']}/ready")

    def bootstrap_args(self) -> list[str]:
        argv, out, i = documented_command()[2:], [], 0
        while i < len(argv):
            a, v = argv[i], argv[i + 1]
            i += 2
            if a == "--route":  # the mock, over plain HTTP
                prefix, provider, _url = v.split("=", 2)
                out += [a, f"{prefix}={provider}=http://127.0.0.1:{self.ports['upstream']}"]
            elif a == "--llmtally":
                out += [a, f"127.0.0.1:{self.ports['grpc']}"]
            elif a == "--admin-address":
                out += [a, f"127.0.0.1:{self.ports['admin']}"]
            elif not a.startswith("--jwt") and a not in ("--jwks-uri", "--upstream-ca"):
                out += [a, v]
        return [*out, "--no-jwt", "--listen-host", "127.0.0.1", "--listen-port", str(self.ports["listen"])]

    def envoy_args(self) -> list[str]:
        (self.dir / "envoy.json").write_text(run_envoy_config(self.bootstrap_args()))
        args = list(envoy_args(self.docs))
        args[args.index("-c") + 1] = str(self.dir / "envoy.json")
        overlay = flag(args, "--config-yaml")
        overlay = replace_once(
            overlay, "address: 0.0.0.0, port_value: 8081", f"address: 127.0.0.1, port_value: {self.ports['health']}"
        )
        overlay = replace_once(overlay, "port_value: 9901", f"port_value: {self.ports['admin']}")
        args[args.index("--config-yaml") + 1] = overlay
        args[args.index("--drain-time-s") + 1] = str(self.DRAIN)
        return [*args, "-l", "warning"]

    def prestop(self) -> str:
        script = prestop_script(self.docs)
        script = replace_once(script, "/dev/tcp/127.0.0.1/9901", f"/dev/tcp/127.0.0.1/{self.ports['admin']}")
        return re.sub(r"(?m)^DRAIN=\d+$", f"DRAIN={self.DRAIN}", script)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "wb")
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def url(self, port: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    def get(self, port: str, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url(port, path), timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
    p = Pod(tmp_path_factory.mktemp("pod"))
    yield p
    p.stop()


def test_the_probes_succeed_on_a_running_pod(pod):
    """Each probe's path answers 200 on the port the manifest probes (moved to a free one here), the health
    listener serves admin's /ready and nothing else of it; the gRPC health service names the ext_proc service the
    other files' grpc probes ask for."""
    spec = pod_spec(pod.docs)
    moved = {9092: "metrics", 8081: "health"}
    for c in containers(spec):
        for kind, p in probes(c).items():
            status, body = pod.get(moved[p["httpGet"]["port"]], p["httpGet"]["path"])
            assert status == 200, (c["name"], kind, status)
    assert pod.get("health", "/ready") == (200, b"LIVE\n")
    for path in ("/stats", "/config_dump", "/quitquitquit", "/ready/x"):
        assert pod.get("health", path)[0] == 404, path
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    service = container(pod_spec(docs_of("istio.yaml")), "llmtally")["readinessProbe"]["grpc"]["service"]
    with grpc.insecure_channel(f"127.0.0.1:{pod.ports['grpc']}") as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


STREAM_BODY = json.dumps(
    {
        "model": "gpt-3.5-turbo",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Say hello."}],
    }
).encode()


async def _stream(port: int, delay_ms: int, repeat: int = 1) -> tuple[bytes, float]:
    """One streamed completion through Envoy (HTTP/1.1, the connection closed after it): the bytes, when it ended."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(
        (
            f"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
            f"x-mock-delay-ms: {delay_ms}\r\nx-mock-repeat: {repeat}\r\nconnection: close\r\n"
            f"content-length: {len(STREAM_BODY)}\r\n\r\n"
        ).encode()
        + STREAM_BODY
    )
    data = await r.read()
    w.close()
    return data, time.time()


def ok_stream(data: bytes) -> bool:
    return data.startswith(b"HTTP/1.1 200") and data.rstrip().endswith(b"0") and b"data: [DONE]" in data


def rss_mib(pid: int) -> float:
    import psutil

    p = psutil.Process(pid)
    return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20


STREAMS = 400


def test_resources_are_sized_from_the_measured_rss(pod, tmp_path):
    """RSS idle and with 400 concurrent streams (psutil, sampled every 50 ms): each container's memory request holds
    its peak, llmtally's limit that plus maxBufferedBodyBytes, Envoy's twice its peak; Envoy's idle RSS with the
    ConfigMap's own envoy.json (its clusters on loopback) too."""
    asyncio.run(_many(pod.ports["listen"], 3, 2))  # warm: the first requests load what they need
    time.sleep(1)
    idle = {"llmtally": rss_mib(pod.serve.pid), "envoy": rss_mib(pod.envoy.pid)}
    peak = dict(idle)
    results: list = []
    t = threading.Thread(target=lambda: results.extend(asyncio.run(_many(pod.ports["listen"], STREAMS, 40))))
    t.start()
    while t.is_alive():
        peak = {
            "llmtally": max(peak["llmtally"], rss_mib(pod.serve.pid)),
            "envoy": max(peak["envoy"], rss_mib(pod.envoy.pid)),
        }
        time.sleep(0.05)
    assert sum(ok_stream(d) for d, _ in results) == STREAMS
    own = _envoy_idle_with_the_configmap_bootstrap(tmp_path)
    print(
        f"\nRSS MiB: llmtally idle {idle['llmtally']:.0f}, {STREAMS} streams {peak['llmtally']:.0f}; "
        f"Envoy idle {idle['envoy']:.0f} ({own:.0f} with envoy.json), {STREAMS} streams {peak['envoy']:.0f}"
    )
    spec = pod_spec(pod.docs)
    cfg = yaml.safe_load(one(pod.docs, "ConfigMap")["data"]["llmtally.yaml"])
    for name in ("llmtally", "envoy"):
        res = container(spec, name)["resources"]
        assert mib(res["requests"]["memory"]) >= peak[name], (name, peak[name])
        assert mib(res["limits"]["memory"]) >= 2 * peak[name], (name, peak[name])
    assert mib(container(spec, "envoy")["resources"]["requests"]["memory"]) >= own
    sidecar_limit = mib(container(spec, "llmtally")["resources"]["limits"]["memory"])
    assert sidecar_limit >= peak["llmtally"] + cfg["maxBufferedBodyBytes"] / 2**20


async def _many(port: int, n: int, delay_ms: int) -> list:
    return await asyncio.gather(*(_stream(port, delay_ms, 2) for _ in range(n)))


def _envoy_idle_with_the_configmap_bootstrap(tmp_path: pathlib.Path) -> float:
    boot = copy.deepcopy(generated_bootstrap())
    nowhere = free_port()  # nothing listens there: the TLS clusters and the JWKS fetch fail at once
    boot["admin"]["address"]["socket_address"]["port_value"] = admin = free_port()
    boot["static_resources"]["listeners"][0]["address"]["socket_address"] |= {
        "address": "127.0.0.1",
        "port_value": free_port(),
    }
    for c in boot["static_resources"]["clusters"]:
        for e in c["load_assignment"]["endpoints"]:
            for lb in e["lb_endpoints"]:
                lb["endpoint"]["address"]["socket_address"] |= {"address": "127.0.0.1", "port_value": nowhere}
    (tmp_path / "own.json").write_text(json.dumps(boot))
    args = envoy_args(docs_of("kubernetes.yaml"))
    proc = subprocess.Popen(
        [
            envoy_binary(),
            "-c",
            str(tmp_path / "own.json"),
            "--disable-hot-restart",
            "--concurrency",
            flag(args, "--concurrency"),
            "-l",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{admin}/ready")
        time.sleep(2)
        return rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(15)


def test_the_prestop_drains_envoy_without_cutting_a_stream(pod):
    """The manifest's preStop (drain time 2 s here) on a running Envoy with a stream open: readiness fails at once;
    during the drain a new request is still served, told to close its connection; the preStop returns only once
    the stream has ended, whole; then the listeners are closed, Envoy exits on SIGTERM, and llmtally, stopped after
    it, counted every request."""
    before = _requests_total(pod)
    out: dict = {}

    def stream():
        out["data"], out["ended"] = asyncio.run(_stream(pod.ports["listen"], 250))

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.5)
    started = time.time()
    hook = subprocess.Popen(["/bin/bash", "-c", pod.prestop()])
    deadline = time.time() + 5
    while pod.get("health", "/ready")[0] != 503:
        assert time.time() < deadline, "readiness still passes during the drain"
        time.sleep(0.05)
    # a new connection during the drain window: served, and asked to close
    req = urllib.request.Request(pod.url("listen", "/openai/v1/chat/completions"), data=STREAM_BODY)
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200 and r.headers["connection"] == "close" and b"[DONE]" in r.read()
    assert hook.wait(60) == 0
    returned = time.time()
    t.join(30)
    assert ok_stream(out["data"]), out["data"][-300:]
    assert returned >= out["ended"] - 0.05, "the preStop returned before the stream ended"
    assert returned - started >= pod.DRAIN and returned - out["ended"] < 3
    with pytest.raises(OSError):  # the listeners are closed
        socket.create_connection(("127.0.0.1", pod.ports["listen"]), timeout=2).close()
    pod.envoy.terminate()
    assert pod.envoy.wait(10) == 0
    assert _requests_total(pod) - before == 2
    pod.serve.terminate()
    assert pod.serve.wait(15) == 0


def _requests_total(pod) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    status, text = pod.get("metrics", "/metrics")
    assert status == 200
    return sum(
        s.value
        for fam in text_string_to_metric_families(text.decode())
        if fam.name == "ai_requests"
        for s in fam.samples
        if s.name == "ai_requests_total"
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        regenerate()
        print(f"rewrote envoy.json in {MANIFEST.relative_to(ROOT)}")
    else:
        sys.exit("usage: python tests/test_deploy_k8s.py --regenerate")
