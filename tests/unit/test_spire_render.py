"""Pure tests of the SPIRE renderer: server.conf, agent.conf, controller manager and OIDC
configs per stack, registrations validated against the real spire-controller-manager CRD
schemas, and the build-time validation errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from components.config import StackConfig
from components.errors import ConfigError, ManifestError
from components.manifest.loader import load_manifests
from components.platform_model import Platform, build_platform, load_platform
from components.render import spire as r
from components.render.artifacts import render_all
from tests.support.tools import ROOT

CRDS = ROOT / "crds" / "spire"  # committed; made by scripts/crds.py vendor
STACKS = ("dev", "staging", "prod")


def _strict(node: Any) -> Any:
    """The API server prunes unknown fields silently; make them errors so a typo fails here."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _schema(kind_plural: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"{kind_plural}.spire.spiffe.io.yaml").read_text(encoding="utf-8"))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    assert version["served"] is True
    schema = _strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is the API server's business
    return dict(schema)


def test_strict_schema_rejects_a_misspelt_field() -> None:
    obj = r.registration_objects(load_platform("dev"))[0]
    bad = {**obj, "spec": {**obj["spec"], "jwtTTL": "5m"}}
    with pytest.raises(jsonschema.ValidationError, match="jwtTTL"):
        jsonschema.validate(bad, SCHEMAS["ClusterSPIFFEID"])


SCHEMAS = {
    "ClusterSPIFFEID": _schema("clusterspiffeids"),
    "ClusterStaticEntry": _schema("clusterstaticentries"),
}


def _with(platform: Platform, **sections: dict[str, Any]) -> Platform:
    """The platform with some config sections' fields replaced (re-validated)."""
    data = platform.config.model_dump(by_alias=True)
    for section, values in sections.items():
        if isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    cfg = StackConfig.model_validate(data)
    return dataclasses.replace(platform, config=cfg)


def _platform_with_manifest(tmp_path: Path, stack: str, text: str) -> Platform:
    agents = tmp_path / "agents"
    shutil.copytree(ROOT / "agents", agents)
    (agents / "extra.yaml").write_text(text)
    base = load_platform(stack)
    return build_platform(base.config, load_manifests([agents]), stack, base.config_file)


EXTRA_K8S = """\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata:
  name: {name}
  team: test
  owner: test@acme-corp.net
spec:
{spec}
"""


# --------------------------------------------------------------------------- server.conf


@pytest.mark.parametrize("stack", STACKS)
def test_server_conf_core_settings(stack: str) -> None:
    p = load_platform(stack)
    conf = r.server_config(p)
    server = conf["server"]
    assert server["trust_domain"] == p.config.trust_domain
    assert server["ca_key_type"] == "ec-p256"
    assert server["ca_ttl"] == "24h"
    assert server["default_x509_svid_ttl"] == "15m"
    assert server["default_jwt_svid_ttl"] == "5m"
    assert server["jwt_issuer"] == f"https://oidc-discovery.{p.config.trust_domain}"
    assert server["socket_path"] == "/tmp/spire-server/private/api.sock"  # noqa: S108
    assert conf["health_checks"] == {
        "listener_enabled": True,
        "bind_address": "0.0.0.0",  # noqa: S104
        "bind_port": "8080",
        "live_path": "/live",
        "ready_path": "/ready",
    }
    assert conf["telemetry"] == {"Prometheus": {"host": "0.0.0.0", "port": 9988}}  # noqa: S104
    psat = conf["plugins"]["NodeAttestor"][0]["k8s_psat"]["plugin_data"]
    assert psat == {
        "clusters": [
            {stack: {"service_account_allow_list": ["spire-system:spire-agent"], "audience": ["spire-server"]}}
        ]
    }
    assert conf["plugins"]["Notifier"] == [
        {
            "k8sbundle": {
                "plugin_data": {
                    "namespace": "spire-system",
                    "config_map": "spire-bundle",
                    "config_map_key": "bundle.crt",
                }
            }
        }
    ]
    # SPIRE parses this JSON as HCL: it must be plain JSON (no Outputs, no NaN)
    assert json.loads(json.dumps(conf, allow_nan=False)) == conf


def test_dev_server_uses_sqlite_and_the_disk_upstream() -> None:
    conf = r.server_config(load_platform("dev"))
    assert conf["plugins"]["DataStore"] == [
        {
            "sql": {
                "plugin_data": {
                    "database_type": "sqlite3",
                    "connection_string": "/run/spire/server/data/datastore.sqlite3",
                }
            }
        }
    ]
    assert conf["plugins"]["UpstreamAuthority"] == [
        {
            "disk": {
                "plugin_data": {
                    "cert_file_path": "/run/spire/upstream/chain.pem",
                    "key_file_path": "/run/spire/upstream/key.pem",
                    "bundle_file_path": "/run/spire/upstream/bundle.pem",
                }
            }
        }
    ]


def test_prod_server_uses_postgres_from_env_and_aws_pca() -> None:
    conf = r.server_config(load_platform("prod"))
    assert conf["plugins"]["DataStore"] == [
        {"sql": {"plugin_data": {"database_type": "postgres", "connection_string": "${SPIRE_DB_CONNECTION}"}}}
    ]
    assert conf["plugins"]["UpstreamAuthority"] == [
        {
            "aws_pca": {
                "plugin_data": {
                    "region": "us-east-1",
                    "certificate_authority_arn": "${SPIRE_UPSTREAM_PCA_ARN}",
                    "ca_signing_template_arn": "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen0/V1",
                    "signing_algorithm": "SHA256WITHECDSA",
                }
            }
        }
    ]


def test_staging_server_uses_vault_pki_with_kubernetes_auth() -> None:
    conf = r.server_config(load_platform("staging"))
    assert conf["plugins"]["UpstreamAuthority"] == [
        {
            "vault": {
                "plugin_data": {
                    "vault_addr": "https://vault.staging.acme-corp.net:8200",
                    "pki_mount_point": "pki-spire",
                    "k8s_auth": {
                        "k8s_auth_mount_point": "kubernetes",
                        "k8s_auth_role_name": "spire-upstream",
                        "token_path": "/var/run/secrets/tokens/vault",
                    },
                }
            }
        }
    ]


def test_node_attestors_follow_the_active_agents() -> None:
    p = load_platform("dev")
    # report-summarizer (VM, aws_iid) and ledger-sync (Windows hosts, aws_iid)
    assert r.node_attestations(p) == ["k8s_psat", "aws_iid"]
    k8s_only = dataclasses.replace(p, agents=tuple(a for a in p.agents if a.identity.platform == "kubernetes"))
    assert r.node_attestations(k8s_only) == ["k8s_psat"]
    names = [next(iter(x)) for x in r.server_config(k8s_only)["plugins"]["NodeAttestor"]]
    assert names == ["k8s_psat"]


def test_durations_are_go_durations() -> None:
    assert r.go_duration("1d") == "24h"
    assert r.go_duration("90m") == "1h30m"
    assert r.go_duration("45s") == "45s"
    assert r.go_duration("15m") == "15m"
    p = _with(load_platform("dev"), spire={"caTtl": "2d"})
    assert r.server_config(p)["server"]["ca_ttl"] == "48h"


# --------------------------------------------------------------------------- agent.conf


@pytest.mark.parametrize("stack", STACKS)
def test_agent_conf(stack: str) -> None:
    p = load_platform(stack)
    conf = r.agent_config(p)
    agent = conf["agent"]
    assert agent["server_address"] == "spire-server.spire-system.svc"
    assert agent["server_port"] == "8081"
    assert agent["socket_path"] == "/run/spire/agent-sockets/spire-agent.sock"
    assert agent["trust_bundle_path"] == "/run/spire/bundle/bundle.crt"
    assert agent["trust_domain"] == p.config.trust_domain
    assert agent["sds"] == {
        "default_svid_name": "default",
        "default_bundle_name": "ROOTCA",
        "default_all_bundles_name": "ALL",
        "disable_spiffe_cert_validation": False,
    }
    assert conf["plugins"]["NodeAttestor"] == [
        {"k8s_psat": {"plugin_data": {"cluster": stack, "token_path": "/var/run/secrets/tokens/spire-server"}}}
    ]
    assert conf["plugins"]["WorkloadAttestor"] == [
        {"k8s": {"plugin_data": {"node_name_env": "MY_NODE_NAME", "skip_kubelet_verification": False}}}
    ]
    assert conf["plugins"]["KeyManager"] == [{"memory": {"plugin_data": {}}}]


def test_agent_daemonset_mounts_the_bundle_token_and_socket_dir() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in r.agent_objects(load_platform("dev"))}
    ds = objs[("DaemonSet", "spire-agent")]["spec"]["template"]["spec"]
    (container,) = ds["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["sockets"] == "/run/spire/agent-sockets"
    assert mounts["token"] == "/var/run/secrets/tokens"
    volumes = {v["name"]: v for v in ds["volumes"]}
    assert volumes["token"]["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "spire-server"
    assert volumes["bundle"] == {"name": "bundle", "configMap": {"name": "spire-bundle"}}
    assert ds["hostPID"] is True
    csi = objs[("CSIDriver", "csi.spiffe.io")]["spec"]
    assert csi["volumeLifecycleModes"] == ["Ephemeral"]
    assert csi["podInfoOnMount"] is True
    csi_ds = objs[("DaemonSet", "spiffe-csi-driver")]["spec"]["template"]["spec"]
    driver = csi_ds["containers"][0]
    assert driver["args"][:4] == ["-workload-api-socket-dir", "/spire-agent-socket", "-plugin-name", "csi.spiffe.io"]
    assert {"name": "sockets", "hostPath": {"path": "/run/spire/agent-sockets", "type": "DirectoryOrCreate"}} in (
        csi_ds["volumes"]
    )


@pytest.mark.parametrize(("stack", "max_unavailable"), [("dev", 1), ("prod", 5)])
def test_storm_controls_rate_limits_on_and_the_agent_rollout_sized_from_the_servers(
        stack: str, max_unavailable: int) -> None:
    platform = load_platform(stack)
    assert r.server_config(platform)["server"]["ratelimit"] == {"attestation": True, "signing": True}
    objs = {(o["kind"], o["metadata"]["name"]): o for o in r.agent_objects(platform)}
    spec = objs[("DaemonSet", "spire-agent")]["spec"]
    # 80 % of replicas x 1150 signings/s over the 500/s one restarted node may take
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": max_unavailable}}
    assert spec["minReadySeconds"] == 5  # a node of these few agents re-signs within the floor


# --------------------------------------------------------------------------- server objects


def test_dev_server_is_a_single_statefulset_with_a_volume() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in r.server_objects(load_platform("dev"))}
    sts = objs[("StatefulSet", "spire-server")]["spec"]
    assert sts["replicas"] == 1
    assert sts["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    containers = {c["name"]: c for c in sts["template"]["spec"]["containers"]}
    assert containers["spire-server"]["args"] == ["-config", "/run/spire/server/config/server.conf"]
    assert containers["spire-server"]["image"] == "ghcr.io/spiffe/spire-server:1.15.3"
    assert containers["spire-controller-manager"]["image"] == "ghcr.io/spiffe/spire-controller-manager:0.6.6"
    volumes = {v["name"]: v for v in sts["template"]["spec"]["volumes"]}
    assert volumes["upstream"]["projected"]["sources"] == [
        {"configMap": {"name": "spire-server-upstream"}},
        {"secret": {"name": "spire-server-upstream-key"}},
    ]
    assert ("PodDisruptionBudget", "spire-server") not in objs
    cr = objs[("ClusterRole", "spire-system-spire-server")]["rules"]
    assert {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]} in cr
    conf = json.loads(objs[("ConfigMap", "spire-server")]["data"]["server.conf"])
    assert conf == r.server_config(load_platform("dev"))


def test_prod_server_is_highly_available() -> None:
    p = load_platform("prod")
    objs = {(o["kind"], o["metadata"]["name"]): o for o in r.server_objects(p)}
    dep = objs[("Deployment", "spire-server")]["spec"]
    assert dep["replicas"] == 3
    server = dep["template"]["spec"]["containers"][0]
    assert server["args"] == ["-config", "/run/spire/server/config/server.conf", "-expandEnv"]
    assert server["env"] == [
        {
            "name": "SPIRE_DB_CONNECTION",
            "valueFrom": {"secretKeyRef": {"name": "spire-server-datastore", "key": "connection-string"}},
        },
        {
            "name": "SPIRE_UPSTREAM_PCA_ARN",
            "valueFrom": {"configMapKeyRef": {"name": "spire-server-upstream", "key": "pca-arn"}},
        },
    ]
    assert objs[("PodDisruptionBudget", "spire-server")]["spec"]["minAvailable"] == 2
    assert "podAntiAffinity" in dep["template"]["spec"]["affinity"]
    assert objs[("Deployment", "spire-oidc-discovery-provider")]["spec"]["replicas"] == 2


def test_controller_manager_config_owns_only_its_class() -> None:
    p = load_platform("staging")
    conf = r.controller_manager_config(p)
    assert conf["className"] == "agent-passport"
    assert conf["watchClassless"] is False
    assert conf["trustDomain"] == "staging.agents.acme-corp.net"
    assert conf["clusterName"] == "staging"
    assert conf["spireServerSocketPath"] == "/tmp/spire-server/private/api.sock"  # noqa: S108
    assert conf["validatingWebhookConfigurationName"] == r.webhook_configuration(p)["metadata"]["name"]
    # The config file is the inline Go struct, not the CRD: its keys are the json tags of
    # ControllerManagerConfig + ControllerManagerConfigurationSpec (api/v1alpha1, v0.6.6).
    known = {
        "apiVersion",
        "kind",
        "clusterName",
        "clusterDomain",
        "trustDomain",
        "ignoreNamespaces",
        "validatingWebhookConfigurationName",
        "gcInterval",
        "spireServerSocketPath",
        "logLevel",
        "logEncoding",
        "grpc",
        "syncPeriod",
        "leaderElection",
        "cacheNamespace",
        "cacheNamespaces",
        "gracefulShutDown",
        "controller",
        "metrics",
        "health",
        "webhook",
        "className",
        "watchClassless",
        "parentIDTemplate",
        "reconcile",
        "entryIDPrefix",
        "entryIDPrefixCleanup",
        "staticManifestPath",
        "expandEnvStaticManifests",
    }
    assert set(conf) <= known
    assert set(conf["metrics"]) == {"bindAddress"}
    assert set(conf["health"]) == {"healthProbeBindAddress"}
    assert set(conf["leaderElection"]) == {"leaderElect", "resourceName", "resourceNamespace"}


def test_oidc_discovery_provider_serves_the_issuer_and_keys() -> None:
    p = load_platform("prod")
    conf = r.oidc_config(p)
    assert conf["jwt_issuer"] == "https://oidc-discovery.prod.agents.acme-corp.net"
    assert conf["jwks_uri"] == "https://oidc-discovery.prod.agents.acme-corp.net/keys"
    assert conf["domains"][0] == "oidc-discovery.prod.agents.acme-corp.net"
    assert conf["workload_api"] == {
        "socket_path": "/run/spire/agent-sockets/spire-agent.sock",
        "trust_domain": "prod.agents.acme-corp.net",
    }
    assert "server_path_prefix" not in conf
    with_path = _with(p, spire={"jwtIssuer": "https://id.acme-corp.net/spire"})
    assert r.oidc_config(with_path)["server_path_prefix"] == "/spire"
    assert r.oidc_config(with_path)["jwks_uri"] == "https://id.acme-corp.net/spire/keys"
    dep = next(o for o in r.oidc_objects(p) if o["kind"] == "Deployment")
    # it needs no Kubernetes API token: its keys come from the Workload API
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    sa = next(o for o in r.oidc_objects(p) if o["kind"] == "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    volumes = dep["spec"]["template"]["spec"]["volumes"]
    assert {"name": "workload-api", "csi": {"driver": "csi.spiffe.io", "readOnly": True}} in volumes


# --------------------------------------------------------------------------- registrations


@pytest.mark.parametrize("stack", STACKS)
def test_every_registration_matches_the_crd_schema(stack: str) -> None:
    objs = r.registration_objects(load_platform(stack))
    assert objs
    for obj in objs:
        assert obj["apiVersion"] == "spire.spiffe.io/v1alpha1"
        jsonschema.validate(obj, SCHEMAS[obj["kind"]])


@pytest.mark.parametrize("stack", STACKS)
def test_one_workload_registration_per_active_agent_with_its_spiffe_id(stack: str) -> None:
    p = load_platform(stack)
    for agent in p.active_agents:
        objs = r.agent_registrations(p, agent)
        workload = [o for o in objs if o["metadata"]["name"] == f"agent.{agent.name}"]
        assert len(workload) == 1
        spec = workload[0]["spec"]
        assert spec.get("spiffeIDTemplate", spec.get("spiffeID")) == agent.identity.spiffe_id
        assert spec["className"] == "agent-passport"
        assert all(o["metadata"]["labels"]["agentpassport.dev/agent"] == agent.name for o in objs)


def test_kubernetes_agent_clusterspiffeid() -> None:
    p = load_platform("dev")
    agent = p.agent("agent-cortex")
    assert agent is not None
    (obj,) = r.agent_registrations(p, agent)
    assert obj["kind"] == "ClusterSPIFFEID"
    assert obj["spec"] == {
        "className": "agent-passport",
        "spiffeIDTemplate": "spiffe://dev.agentpassport.internal/ns/agents/sa/agent-cortex",
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agents"}},
        "podSelector": {"matchLabels": {"app": "agent-cortex"}},
        "workloadSelectorTemplates": ["k8s:ns:agents", "k8s:sa:agent-cortex"],
        "ttl": "15m",
        "jwtTtl": "5m",
        "hint": "agent-cortex",
    }


def test_vm_agent_gets_a_node_alias_and_an_entry() -> None:
    p = load_platform("dev")
    agent = p.agent("report-summarizer")
    assert agent is not None
    node, entry = r.agent_registrations(p, agent)
    assert node["kind"] == entry["kind"] == "ClusterStaticEntry"
    assert node["spec"] == {
        "className": "agent-passport",
        "spiffeID": "spiffe://dev.agentpassport.internal/node/report-summarizer",
        "parentID": "spiffe://dev.agentpassport.internal/spire/server",
        "selectors": ["aws_iid:region:us-east-1", "aws_iid:tag:agentpassport:role:report-summarizer"],
    }
    assert entry["spec"]["parentID"] == node["spec"]["spiffeID"]
    assert entry["spec"]["spiffeID"] == "spiffe://dev.agentpassport.internal/vm/report-summarizer"
    assert entry["spec"]["selectors"] == ["unix:uid:1001"]
    assert (entry["spec"]["x509SVIDTTL"], entry["spec"]["jwtSVIDTTL"]) == ("15m", "5m")


def test_windows_host_agent_is_selected_by_its_gmsa() -> None:
    p = load_platform("staging")
    agent = p.agent("ledger-sync")
    assert agent is not None
    node, entry = r.agent_registrations(p, agent)
    assert node["spec"]["selectors"] == [
        "aws_iid:region:us-east-1",
        "aws_iid:tag:agentpassport:host-group:LedgerSyncHosts",
    ]
    assert entry["spec"]["selectors"] == ["windows:user_name:ACME\\gmsa-ledgersync$"]


def test_join_token_vm_and_windows_pod_agents(tmp_path: Path) -> None:
    text = (
        EXTRA_K8S.format(
            name="batch-vm",
            spec="""\
  identity:
    x509SvidTtl: 10m
    dnsNames: [batch.internal]
  platform:
    vm:
      attestation: join_token
      workloadSelectors: ["systemd:id:batch.service"]
""",
        )
        + "---\n"
        + EXTRA_K8S.format(
            name="win-pod",
            spec="""\
  identity:
    jwtSvidTtl: 2m
  platform:
    windows:
      gmsaAccount: gmsa-winpod
      hostGroup: WinPodNodes
      pod:
        namespace: win-agents
        serviceAccount: win-pod
""",
        )
    )
    p = _platform_with_manifest(tmp_path, "dev", text)
    vm = p.agent("batch-vm")
    assert vm is not None
    (entry,) = r.agent_registrations(p, vm)  # the alias comes from `spire-server token generate`
    assert entry["spec"]["parentID"] == "spiffe://dev.agentpassport.internal/node/batch-vm"
    assert entry["spec"]["dnsNames"] == ["batch.internal"]
    assert entry["spec"]["x509SVIDTTL"] == "10m"
    win = p.agent("win-pod")
    assert win is not None
    (spiffeid,) = r.agent_registrations(p, win)
    assert spiffeid["kind"] == "ClusterSPIFFEID"
    assert spiffeid["spec"]["spiffeIDTemplate"] == win.identity.spiffe_id
    assert spiffeid["spec"]["workloadSelectorTemplates"] == ["k8s:ns:win-agents", "k8s:sa:win-pod"]
    assert spiffeid["spec"]["jwtTtl"] == "2m"
    assert "join_token" in r.node_attestations(p)
    for obj in r.registration_objects(p):
        jsonschema.validate(obj, SCHEMAS[obj["kind"]])


def test_suspended_agent_gets_no_registration(tmp_path: Path) -> None:
    text = EXTRA_K8S.format(
        name="paused-agent",
        spec="""\
  suspended: true
  suspendedReason: INC-1234 credential misuse under investigation
  platform:
    kubernetes:
      namespace: agents
      serviceAccount: paused-agent
""",
    )
    p = _platform_with_manifest(tmp_path, "dev", text)
    paused = p.agent("paused-agent")
    assert paused is not None
    assert paused.suspended
    assert r.agent_registrations(p, paused) == []
    names = [o["metadata"]["name"] for o in r.registration_objects(p)]
    assert "agent.paused-agent" not in names
    assert not any(paused.identity.spiffe_id in json.dumps(o) for o in r.registration_objects(p))


def test_dns_names_become_dns_name_templates(tmp_path: Path) -> None:
    text = EXTRA_K8S.format(
        name="web-agent",
        spec="""\
  identity:
    dnsNames: [web-agent.agents.svc, web.acme-corp.net]
  platform:
    kubernetes:
      namespace: agents
      serviceAccount: web-agent
""",
    )
    p = _platform_with_manifest(tmp_path, "dev", text)
    agent = p.agent("web-agent")
    assert agent is not None
    (obj,) = r.agent_registrations(p, agent)
    assert obj["spec"]["dnsNameTemplates"] == ["web-agent.agents.svc", "web.acme-corp.net"]
    assert obj["spec"]["podSelector"] == {"matchLabels": {}}
    jsonschema.validate(obj, SCHEMAS["ClusterSPIFFEID"])


# --------------------------------------------------------------------------- validation


def test_valid_stacks_have_no_problems() -> None:
    for stack in STACKS:
        assert r.spire_problems(load_platform(stack)) == []


@pytest.mark.parametrize(
    ("sections", "field", "fragment"),
    [
        (
            {"spire": {"defaultJwtSvidTtl": "30m"}},
            "agent-passport:spire.defaultJwtSvidTtl",
            "limits.maxJwtSvidTtl (15m)",
        ),
        ({"spire": {"replicas": 2}}, "agent-passport:spire.replicas", "need datastore postgres"),
        ({"spire": {"datastore": "postgres"}}, "agent-passport:spire.datastoreConnectionSecret", "connection string"),
        ({"spire": {"jwtIssuer": "oidc.example"}}, "agent-passport:spire.jwtIssuer", "not an absolute URL"),
        ({"spire": {"jwtIssuer": "https://oidc.acme.net/"}}, "agent-passport:spire.jwtIssuer", "trailing '/'"),
    ],
)
def test_stack_problems_are_config_errors(sections: dict[str, dict[str, Any]], field: str, fragment: str) -> None:
    p = load_platform("dev")
    p = dataclasses.replace(
        p,
        config=p.config.model_copy(
            update={
                k: getattr(p.config, k).model_copy(update={_snake(f): v for f, v in vals.items()})
                for k, vals in sections.items()
            }
        ),
    )
    with pytest.raises(ConfigError) as err:
        r.check(p)
    fields = {pr.field: pr for pr in err.value.problems}
    assert field in fields
    assert fragment in fields[field].message
    assert fields[field].file == "stacks/Pulumi.dev.yaml"


def test_strict_stacks_need_an_https_issuer() -> None:
    p = load_platform("prod")
    p = dataclasses.replace(
        p,
        config=p.config.model_copy(
            update={"spire": p.config.spire.model_copy(update={"jwt_issuer": "http://oidc.acme-corp.net"})}
        ),
    )
    with pytest.raises(ConfigError, match="https"):
        r.check(p)


def test_manifest_problems_name_file_line_and_field(tmp_path: Path) -> None:
    wide_vm = EXTRA_K8S.format(
        name="wide-vm",
        spec="""\
  platform:
    vm:
      attestation: aws_iid
      awsAccountId: "111122223333"
      awsRegion: eu-west-1
      workloadSelectors: ["unix:uid:1000"]
""",
    )
    sneaky = EXTRA_K8S.format(
        name="sneaky",
        spec="""\
  identity:
    spiffePath: /spire/agent/k8s_psat/dev/node-1
  platform:
    kubernetes:
      namespace: agents
      serviceAccount: sneaky
""",
    )
    # SPIRE's own IDs are refused for every stack by the platform model, before any renderer.
    with pytest.raises(ManifestError) as refused:
        _platform_with_manifest(tmp_path, "dev", sneaky)
    (path,) = refused.value.problems
    assert path.field == "spec.identity.spiffePath"
    assert path.file.endswith("extra.yaml")
    assert path.line is not None
    assert sneaky.splitlines()[path.line - 1].strip().startswith("spiffePath:")
    assert "reserve" in path.message
    # what only the SPIRE renderer sees: a node alias every EC2 instance of the region matches
    p = _platform_with_manifest(tmp_path / "vm", "dev", wide_vm)
    with pytest.raises(ManifestError) as err:
        r.check(p)
    problems = {pr.field: pr for pr in err.value.problems}
    vm = problems["spec.platform.vm"]
    assert vm.line is not None
    assert wide_vm.splitlines()[vm.line - 1].strip() == "vm:"
    assert "every EC2 instance" in vm.message


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


# --------------------------------------------------------------------------- artifacts


def test_render_registers_spire_artifacts() -> None:
    arts = {a.path: a.content for a in render_all(load_platform("dev"))}
    assert json.loads(arts["spire/server.conf"]) == r.server_config(load_platform("dev"))
    assert json.loads(arts["spire/agent.conf"]) == r.agent_config(load_platform("dev"))
    assert "kubernetes/spire/clusterspiffeid-agent.agent-cortex.yaml" in arts
    assert "kubernetes/spire/daemonset-spire-system-spire-agent.yaml" in arts
    assert "kubernetes/spire/csidriver-csi.spiffe.io.yaml" in arts
    # deploy-time material is never rendered to disk
    assert not any("upstream-key" in path or "datastore" in path for path in arts)
    # deterministic
    assert render_all(load_platform("dev")) == render_all(load_platform("dev"))


def test_host_agent_configs_for_vms_and_windows_hosts(tmp_path: Path) -> None:
    p = load_platform("dev")
    assert r.host_agent_kinds(p) == ["vm-aws_iid", "windows"]
    vm = r.host_agent_config(p, "vm-aws_iid")
    assert vm["agent"]["server_address"] == "spire-server.spire-system.svc"
    assert vm["agent"]["server_port"] == "8081"
    assert vm["agent"]["socket_path"] == "/run/spire/agent-sockets/spire-agent.sock"
    assert vm["plugins"]["NodeAttestor"] == [{"aws_iid": {"plugin_data": {}}}]
    assert vm["plugins"]["WorkloadAttestor"] == [{"unix": {"plugin_data": {}}}]
    win = r.host_agent_config(p, "windows")
    assert "socket_path" not in win["agent"]  # Windows agents serve the Workload API on a named pipe
    assert win["plugins"]["WorkloadAttestor"] == [{"windows": {"plugin_data": {}}}]
    exposed = _with(p, spire={"vmServerAddress": "spire.internal.acme-corp.net:443"})
    assert r.host_agent_config(exposed, "vm-aws_iid")["agent"]["server_address"] == "spire.internal.acme-corp.net"
    assert r.host_agent_config(exposed, "vm-aws_iid")["agent"]["server_port"] == "443"
    text = EXTRA_K8S.format(
        name="batch-vm",
        spec="""\
  platform:
    vm:
      attestation: join_token
      workloadSelectors: ["systemd:id:batch.service"]
""",
    )
    joined = _platform_with_manifest(tmp_path, "dev", text)
    assert r.host_agent_kinds(joined) == ["vm-aws_iid", "vm-join_token", "windows"]
    jt = r.host_agent_config(joined, "vm-join_token")
    assert jt["agent"]["join_token_file"] == "/etc/spire/agent/join-token"
    assert jt["plugins"]["NodeAttestor"] == [{"join_token": {"plugin_data": {}}}]
    arts = {a.path for a in render_all(joined)}
    assert {"spire/agent-vm-aws_iid.conf", "spire/agent-vm-join_token.conf", "spire/agent-windows.conf"} <= arts
