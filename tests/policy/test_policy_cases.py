"""Every policy of the pack, violated and complied with, by small programs run under mocks.

Each case is a tiny Pulumi program using the real SDK classes; it runs through the same
harness as the real program (:func:`components.mockrun.run_program`) and the captured graph is
evaluated by the pack's policy objects (:func:`components.check.evaluate`). A case names the
exact violations it expects: (resource name or None for stack-wide, a phrase of the message).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from components.check import evaluate, policies
from components.mockrun import Graph, run_program

PRELUDE = """
import json
import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls
import pulumi_vault as vault
import pulumi_aws.iam as iam
import pulumi_aws.ssm as ssm
import pulumi_aws.acmpca as acmpca
from components.kube import kube_object

LABEL = "agentpassport.dev/agent"

def bom(agents):
    pulumi.export("identityBom", {"stack": pulumi.get_stack(), "agents": agents})

def agent(spiffe_id, grants=(), subsystems=("spire",), mesh=None, suspended=False):
    return {"spiffeId": spiffe_id, "manifest": "agents/x.yaml", "suspended": suspended,
            "meshIdentity": mesh, "grants": list(grants), "subsystems": list(subsystems)}

def registration(name, agent_name, spiffe_id, **spec):
    return k8s.apiextensions.CustomResource(
        name, api_version="spire.spiffe.io/v1alpha1", kind="ClusterSPIFFEID",
        metadata={"name": name, "labels": {LABEL: agent_name} if agent_name else {}},
        spec={"className": "agent-passport", "spiffeIDTemplate": spiffe_id, **spec})

def deployment(name, pod_spec, labels=None):
    labels = labels or {"app": name}
    return k8s.apps.v1.Deployment(name, metadata={"name": name}, spec={
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec}})

HOLDER = pulumi.ComponentResource("agentpassport:test:Holder", "holder")
CSI = [{"name": "spiffe", "csi": {"driver": "csi.spiffe.io", "readOnly": True}}]
"""


@dataclass(frozen=True)
class Case:
    policy: str
    id: str
    program: str
    expected: list[tuple[str | None, str]]
    stack: str = "dev"
    config: dict[str, Any] = field(default_factory=dict)


CASES = [
    # ---------------------------------------------------------------- no-iam-access-keys
    Case("no-iam-access-keys", "access-key", """
        iam.AccessKey("invoice-processor-ci-key", user="invoice-processor-ci")
    """, [("invoice-processor-ci-key",
           "IAM access key 'invoice-processor-ci-key' for IAM user 'invoice-processor-ci'")]),
    Case("no-iam-access-keys", "federated-role", """
        iam.Role("invoice-processor-reports", name="invoice-processor-reports", assume_role_policy="{}")
    """, []),
    # ---------------------------------------------------------------- no-iam-users
    Case("no-iam-users", "user-and-login-profile", """
        user = iam.User("agent-bot", name="agent-bot")
        iam.UserLoginProfile("agent-bot-console", user=user.name)
    """, [("agent-bot", "IAM user 'agent-bot'"), ("agent-bot-console", "console login profile")]),
    Case("no-iam-users", "allow-listed-break-glass-user", """
        iam.User("break-glass", name="break-glass")
    """, [], config={"no-iam-users": {"allowedUsers": ["break-glass"]}}),
    # ---------------------------------------------------------------- no-service-account-token-secrets
    Case("no-service-account-token-secrets", "sa-token-secret", """
        k8s.core.v1.Secret("agent-cortex-token", type="kubernetes.io/service-account-token",
            metadata={"name": "agent-cortex-token", "labels": {LABEL: "agent-cortex"},
                      "annotations": {"kubernetes.io/service-account.name": "agent-cortex"}})
    """, [("agent-cortex-token", "agent agent-cortex: Secret 'agent-cortex-token' of type "
                                  "kubernetes.io/service-account-token for ServiceAccount 'agent-cortex'")]),
    Case("no-service-account-token-secrets", "opaque-secret", """
        k8s.core.v1.Secret("spire-upstream", type="Opaque",
            string_data={"key.pem": pulumi.Output.secret("not-a-token")})
    """, []),
    # ---------------------------------------------------------------- no-automounted-token-with-spiffe
    Case("no-automounted-token-with-spiffe", "spiffe-pod-with-token", """
        deployment("gw-payments", {"volumes": CSI, "containers": [{"name": "envoy", "image": "envoy"}]})
        k8s.core.v1.ServiceAccount("agent-cortex-sa", metadata={"name": "agent-cortex",
                                                                 "labels": {LABEL: "agent-cortex"}})
    """, [("gw-payments", "pods of 'gw-payments' use SPIFFE identities but still mount"),
          ("agent-cortex-sa", "agent agent-cortex: ServiceAccount 'agent-cortex-sa' leaves automount")]),
    Case("no-automounted-token-with-spiffe", "tokens-off-or-no-spiffe", """
        deployment("gw-payments", {"volumes": CSI, "automountServiceAccountToken": False,
                                   "containers": [{"name": "envoy", "image": "envoy"}]})
        deployment("spire-server", {"containers": [{"name": "server", "image": "spire-server"}]})
        k8s.core.v1.ServiceAccount("agent-cortex-sa", automount_service_account_token=False,
                                   metadata={"name": "agent-cortex", "labels": {LABEL: "agent-cortex"}})
    """, []),
    # ---------------------------------------------------------------- no-literal-credentials
    Case("no-literal-credentials", "literals-everywhere", """
        deployment("report-summarizer-job", {"containers": [{"name": "main", "image": "x", "env": [
            {"name": "DB_PASSWORD", "value": "hunter2"},
            {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "k", "key": "k"}}}]}]},
            labels={LABEL: "report-summarizer"})
        k8s.core.v1.ConfigMap("legacy-settings", data={
            "settings.ini": "[aws]\\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\\n",
            "session": "q8Zt3vR1xLp9Wm2KjN7bYc4HdF6sTg0A"})
        ssm.Document("ledger-sync-dsc", document_type="Command", content=json.dumps({
            "schemaVersion": "2.2", "mainSteps": [{"action": "aws:runPowerShellScript", "name": "dsc",
            "inputs": {"runCommand": ["$Password = 'Winter2024!'", "Start-DscConfiguration -Wait"]}}]}))
    """, [("report-summarizer-job", "agent report-summarizer: 'report-summarizer-job' contains "
                                    "container main: DB_PASSWORD is set to a literal"),
          ("legacy-settings", "data[session]: session holds a high-entropy literal; "
                              "data[settings.ini]: an AWS access key id"),
          ("ledger-sync-dsc", "document content: a literal assigned to $Password")]),
    Case("no-literal-credentials", "references-and-public-material", """
        deployment("gw-payments", {"automountServiceAccountToken": False, "containers": [{
            "name": "envoy", "image": "envoyproxy/envoy:v1.36.2", "args": ["-c", "/etc/envoy/envoy.yaml"],
            "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
                    {"name": "VAULT_TOKEN_PATH", "value": "/var/run/secrets/vault/token"},
                    {"name": "SPIFFE_ENDPOINT_SOCKET", "value": "unix:///spiffe-workload-api/spire-agent.sock"},
                    {"name": "API_KEY_HEADER", "value": "x-api-key"}]}]})
        k8s.core.v1.ConfigMap("trust-bundle", data={
            "bundle.crt": "-----BEGIN CERTIFICATE-----\\nMIIBszCCAVmgAwIBAgIQb3Y=\\n-----END CERTIFICATE-----\\n",
            "policy.rego": "package envoy.authz\\ndefault allow := false\\n",
            "data.json": json.dumps({"spiffe://dev/ns/agents/sa/a": {"paths": ["/v1/payments"]}})})
        ssm.Document("ledger-sync-dsc", document_type="Command", content=json.dumps({"schemaVersion": "2.2",
            "mainSteps": [{"action": "aws:runPowerShellScript", "name": "dsc", "inputs": {"runCommand": [
                "Install-ADServiceAccount -Identity 'gmsa-ledgersync'"]}}]}))
    """, []),
    # ---------------------------------------------------------------- audit-collector-no-keys
    Case("audit-collector-no-keys", "keys-in-config-and-env", """
        k8s.core.v1.ConfigMap("audit-collector", data={
            "config.yaml": "receivers:\\n  file_log: {}\\nexporters:\\n  awss3:\\n    s3uploader:\\n"
                           "      region: us-east-1\\n      access_key: ${env:KEY_ID}\\n"
                           "      secret_key: ${env:KEY}\\n",
            "aws-config": "[default]\\naws_access_key_id = ${KEY_ID}\\n"})
        k8s.apps.v1.DaemonSet("audit-collector", metadata={"name": "agentpassport-audit-collector"}, spec={
            "selector": {"matchLabels": {"app.kubernetes.io/name": "agentpassport-audit-collector"}},
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "agentpassport-audit-collector"}},
                         "spec": {"automountServiceAccountToken": False, "containers": [{
                             "name": "collector", "image": "otel/opentelemetry-collector-contrib:0.165.0",
                             "env": [{"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {
                                         "name": "aws", "key": "id"}}},
                                     {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {
                                         "name": "aws", "key": "secret"}}}]}]}}})
    """, [("audit-collector", "collector config 'audit-collector' carries AWS keys: data[aws-config]: "
                             "aws_access_key_id; data[config.yaml]: access_key, secret_key"),
          ("audit-collector", "collector container 'collector' of 'audit-collector' sets "
                              "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY")]),
    Case("audit-collector-no-keys", "federated-sessions-only", """
        k8s.core.v1.ConfigMap("audit-collector", data={
            "config.yaml": "receivers:\\n  file_log: {}\\nexporters:\\n  awss3:\\n    s3uploader:\\n"
                           "      region: us-east-1\\n      s3_bucket: audit\\n",
            "aws-config": "[default]\\ncredential_process = /usr/local/bin/aws_signing_helper credential-process\\n",
            "app.ini": "access_key: not-a-collector-config"})
        k8s.apps.v1.DaemonSet("audit-collector", metadata={"name": "agentpassport-audit-collector"}, spec={
            "selector": {"matchLabels": {"app.kubernetes.io/name": "agentpassport-audit-collector"}},
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "agentpassport-audit-collector"}},
                         "spec": {"automountServiceAccountToken": False, "containers": [{
                             "name": "collector", "image": "otel/opentelemetry-collector-contrib:0.165.0",
                             "env": [{"name": "AWS_REGION", "value": "us-east-1"},
                                     {"name": "AWS_CONFIG_FILE", "value": "/etc/x/aws-config"}]}]}}})
    """, []),
    Case("audit-collector-no-keys", "keys-in-json-a-secret-and-env-from", """
        import base64
        json_conf = json.dumps({"receivers": {"filelog": {}}, "exporters": {"awss3": {"s3uploader": {
            "region": "us-east-1", "access_key": "${env:KEY_ID}", "secret_key": "${env:KEY}"}}}})
        k8s.core.v1.ConfigMap("collector-json", data={"config.json": json_conf})
        yaml_conf = "exporters:\\n  awss3:\\n    s3uploader: {Secret-Key: abc, session_token: xyz}\\n"
        k8s.core.v1.Secret("collector-secret",
            data={"config.yaml": base64.b64encode(yaml_conf.encode()).decode()},
            string_data={"config.json": json_conf})
        k8s.apps.v1.DaemonSet("audit-collector", metadata={"name": "agentpassport-audit-collector"}, spec={
            "selector": {"matchLabels": {"app.kubernetes.io/name": "agentpassport-audit-collector"}},
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "agentpassport-audit-collector"}},
                         "spec": {"containers": [{
                             "name": "collector", "image": "otel/opentelemetry-collector-contrib:0.165.0",
                             "envFrom": [{"configMapRef": {"name": "settings"}},
                                         {"secretRef": {"name": "aws-keys"}}]}]}}})
    """, [("collector-json", "collector config 'collector-json' carries AWS keys: data[config.json]: "
                            "access_key, secret_key"),
          ("collector-secret", "collector config 'collector-secret' carries AWS keys: data[config.yaml]: "
                              "secret_key, session_token; stringData[config.json]: access_key, secret_key"),
          ("audit-collector", "collector container 'collector' of 'audit-collector' takes its environment "
                              "from Secret 'aws-keys' (envFrom secretRef)")]),
    Case("audit-collector-no-keys", "json-config-and-secret-without-keys", """
        import base64
        json_conf = json.dumps({"receivers": {"filelog": {}}, "exporters": {"awss3": {"s3uploader": {
            "region": "us-east-1", "s3_bucket": "audit", "access_key": ""}}}})
        k8s.core.v1.ConfigMap("collector-json", data={"config.json": json_conf,
                                                      "other.json": json.dumps({"access_key": "not-a-collector"})})
        k8s.core.v1.Secret("collector-secret",
            data={"config.json": base64.b64encode(json_conf.encode()).decode(), "blob": "////"},
            string_data={"token": "access_key: a-value-outside-any-collector-config"})
        k8s.apps.v1.DaemonSet("audit-collector", metadata={"name": "agentpassport-audit-collector"}, spec={
            "selector": {"matchLabels": {"app.kubernetes.io/name": "agentpassport-audit-collector"}},
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "agentpassport-audit-collector"}},
                         "spec": {"containers": [{
                             "name": "collector", "image": "otel/opentelemetry-collector-contrib:0.165.0",
                             "envFrom": [{"configMapRef": {"name": "settings"}}]}]}}})
    """, []),
    # ---------------------------------------------------------------- vault-no-stored-db-password
    Case("vault-no-stored-db-password", "password-in-state", """
        vault.database.SecretBackendConnection("db-main", backend="db-main", name="main", postgresql={
            "connection_url": "postgresql://vault_admin:Sup3rSecret@db:5432/postgres",
            "username": "vault_admin", "password": "Sup3rSecret"})
    """, [("db-main", "postgresql: password is stored in state (use passwordWo + passwordWoVersion); "
                      "postgresql: connectionUrl embeds a literal password")]),
    Case("vault-no-stored-db-password", "literal-password-in-a-dsn-or-beside-a-templated-user", """
        vault.database.SecretBackendConnection("db-mysql", backend="db-mysql", name="mysql", mysql={
            "connection_url": "root:hunter2@tcp(db:3306)/", "username": "root"})
        vault.database.SecretBackendConnection("db-pg", backend="db-pg", name="pg", postgresql={
            "connection_url": "postgresql://{{username}}:hunter2@db:5432/postgres", "username": "vault_admin"})
    """, [("db-mysql", "mysql: connectionUrl embeds a literal password"),
          ("db-pg", "postgresql: connectionUrl embeds a literal password")]),
    Case("vault-no-stored-db-password", "write-only-password", """
        vault.database.SecretBackendConnection("db-main", backend="db-main", name="main", postgresql={
            "connection_url": "postgresql://{{username}}:{{password}}@db:5432/postgres",
            "username": "vault_admin", "password_wo": pulumi.Output.secret("from-config"),
            "password_wo_version": 1})
    """, []),
    # ---------------------------------------------------------------- vault-explicit-ttls
    Case("vault-explicit-ttls", "no-ttls", """
        vault.database.SecretBackendRole("agent-cortex-main-incidents", backend="db-main", db_name="main",
            name="agent-cortex-main-incidents", creation_statements=["CREATE ROLE"], max_ttl=600)
        vault.Mount("db-main-mount", path="db-main", type="database")
        vault.Mount("secret-kv", path="secret", type="kv-v2")
    """, [("agent-cortex-main-incidents", "database role 'agent-cortex-main-incidents' has no explicit "
                                          "defaultTtl"),
          ("db-main-mount", "mount 'db-main' has no explicit defaultLeaseTtlSeconds / maxLeaseTtlSeconds")]),
    Case("vault-explicit-ttls", "explicit-ttls", """
        vault.database.SecretBackendRole("agent-cortex-main-incidents", backend="db-main", db_name="main",
            creation_statements=["CREATE ROLE"], default_ttl=300, max_ttl=600)
        vault.Mount("db-main-mount", path="db-main", type="database", default_lease_ttl_seconds=300,
                    max_lease_ttl_seconds=600)
        vault.jwt.AuthBackendRole("agent-cortex-login", role_name="agent-agent-cortex", user_claim="sub",
                                  role_type="jwt", token_ttl=900, token_max_ttl=1800)
    """, []),
    # ---------------------------------------------------------------- vault-credential-ttl-limits
    Case("vault-credential-ttl-limits", "long-lived", """
        vault.database.SecretBackendRole("agent-cortex-main-incidents", backend="db-main", db_name="main",
            creation_statements=["CREATE ROLE"], default_ttl=300, max_ttl=86400)
        vault.jwt.AuthBackendRole("agent-cortex-login", role_name="agent-agent-cortex", user_claim="sub",
                                  token_ttl=3600, token_max_ttl=1800, token_period=3600)
    """, [("agent-cortex-main-incidents", "maxTtl 1d exceeds 10m"),
          ("agent-cortex-login", "tokenTtl 1h exceeds 15m; tokenPeriod makes tokens periodic")]),
    Case("vault-credential-ttl-limits", "short-lived", """
        vault.database.SecretBackendRole("agent-cortex-main-incidents", backend="db-main", db_name="main",
            creation_statements=["CREATE ROLE"], default_ttl=300, max_ttl=600)
        vault.jwt.AuthBackendRole("agent-cortex-login", role_name="agent-agent-cortex", user_claim="sub",
                                  token_ttl=900, token_max_ttl=1800)
    """, []),
    # ---------------------------------------------------------------- vault-no-token-or-approle-auth
    Case("vault-no-token-or-approle-auth", "token-and-approle", """
        vault.Token("ledger-sync-token", policies=["agent-ledger-sync"], ttl="768h")
        approle = vault.AuthBackend("approle", type="approle")
        vault.approle.AuthBackendRole("ledger-sync-approle", backend=approle.path, role_name="ledger-sync")
    """, [("ledger-sync-token", "'ledger-sync-token' is a Vault token minted by the program"),
          ("approle", "auth backend 'approle' of type approle"),
          ("ledger-sync-approle", "is an AppRole role")]),
    Case("vault-no-token-or-approle-auth", "jwt-login", """
        backend = vault.jwt.AuthBackend("spiffe-jwt", path="spiffe-jwt", jwks_url="https://oidc/keys")
        vault.jwt.AuthBackendRole("ledger-sync-login", backend=backend.path, role_name="agent-ledger-sync",
            user_claim="sub", bound_subject="spiffe://dev/windows/x", token_ttl=900, token_max_ttl=1800)
    """, []),
    # ---------------------------------------------------------------- vault-aws-no-static-keys
    Case("vault-aws-no-static-keys", "static-keys", """
        vault.aws.SecretBackend("aws-engine", path="aws", access_key="AKIAIOSFODNN7EXAMPLE",
                                secret_key=pulumi.Output.secret("wJalrXUtnFEMI/K7MDENG"))
    """, [("aws-engine", "configures Vault's AWS access with static IAM keys (accessKey, secretKey)")]),
    Case("vault-aws-no-static-keys", "workload-identity", """
        vault.aws.SecretBackend("aws-engine", path="aws", identity_token_audience="vault.internal",
                                role_arn="arn:aws:iam::111122223333:role/vault-aws-engine")
    """, []),
    # ---------------------------------------------------------------- leaf-lifetime-limit
    Case("leaf-lifetime-limit", "year-long-leaf", """
        tls.LocallySignedCert("payments-api-serving", cert_request_pem="csr", ca_cert_pem="ca",
            ca_private_key_pem="key", validity_period_hours=8760, allowed_uses=["server_auth"])
    """, [("payments-api-serving", "leaf certificate 'payments-api-serving' is valid for 365d, above 1d")]),
    Case("leaf-lifetime-limit", "short-leaf-and-ca", """
        tls.LocallySignedCert("payments-api-serving", cert_request_pem="csr", ca_cert_pem="ca",
            ca_private_key_pem="key", validity_period_hours=12, allowed_uses=["server_auth"])
        tls.LocallySignedCert("intermediate", cert_request_pem="csr", ca_cert_pem="ca", is_ca_certificate=True,
            ca_private_key_pem="key", validity_period_hours=8760, allowed_uses=["cert_signing"])
    """, []),
    # ---------------------------------------------------------------- svid-ttl-limits
    Case("svid-ttl-limits", "thirty-day-svid", """
        registration("agent-cortex-reg", "agent-cortex", "spiffe://dev/ns/agents/sa/agent-cortex",
                     ttl="720h", jwtTtl="1h")
        k8s.apiextensions.CustomResource("report-summarizer-entry", api_version="spire.spiffe.io/v1alpha1",
            kind="ClusterStaticEntry", metadata={"name": "report-summarizer"},
            spec={"spiffeID": "spiffe://dev/vm/report-summarizer", "parentID": "spiffe://dev/node/x",
                  "selectors": ["unix:uid:1001"], "x509SVIDTTL": "5h"})
    """, [("agent-cortex-reg", "X.509-SVID TTL 30d exceeds the limit of 1h; X.509-SVID TTL 30d exceeds "
                               "caTtl/6 (1d/6 = 4h), so SPIRE could not rotate its CA in time; JWT-SVID TTL "
                               "1h exceeds the limit of 15m"),
          ("report-summarizer-entry", "X.509-SVID TTL 5h exceeds the limit of 1h; X.509-SVID TTL 5h "
                                      "exceeds caTtl/6")]),
    Case("svid-ttl-limits", "short-svids", """
        registration("agent-cortex-reg", "agent-cortex", "spiffe://dev/ns/agents/sa/agent-cortex",
                     ttl="15m0s", jwtTtl="5m")
    """, []),
    # ---------------------------------------------------------------- rsa-key-size
    Case("rsa-key-size", "rsa-1024", """
        tls.PrivateKey("legacy-key", algorithm="RSA", rsa_bits=1024)
        vault.pkisecret.SecretBackendRole("spire-upstream", backend="pki", key_type="rsa", key_bits=1024,
                                          ttl="86400", max_ttl="86400")
    """, [("legacy-key", "uses a 1024-bit RSA key, below 2048"),
          ("spire-upstream", "uses a 1024-bit RSA key, below 2048")]),
    Case("rsa-key-size", "strong-keys", """
        tls.PrivateKey("root-key", algorithm="ECDSA", ecdsa_curve="P256")
        tls.PrivateKey("rsa-key", algorithm="RSA", rsa_bits=3072)
        tls.PrivateKey("default-rsa-key", algorithm="RSA")
    """, []),
    # ---------------------------------------------------------------- linkerd-default-inbound-policy
    Case("linkerd-default-inbound-policy", "open-namespace-and-server", """
        k8s.core.v1.Namespace("payments", metadata={"name": "payments",
                                                    "annotations": {"linkerd.io/inject": "enabled"}})
        k8s.core.v1.Namespace("ml", metadata={"name": "ml", "annotations": {
            "linkerd.io/inject": "enabled", "config.linkerd.io/default-inbound-policy": "all-unauthenticated"}})
        k8s.apiextensions.CustomResource("payments-api-server", api_version="policy.linkerd.io/v1beta3",
            kind="Server", metadata={"name": "payments-api", "namespace": "payments"},
            spec={"podSelector": {"matchLabels": {"app": "payments-api"}}, "port": 8443,
                  "accessPolicy": "all-unauthenticated"})
    """, [("payments", "meshed namespace 'payments' has no config.linkerd.io/default-inbound-policy"),
          ("ml", "sets config.linkerd.io/default-inbound-policy=all-unauthenticated"),
          ("payments-api-server", "Server 'payments-api-server' sets accessPolicy all-unauthenticated")]),
    Case("linkerd-default-inbound-policy", "deny-by-default", """
        k8s.core.v1.Namespace("payments", metadata={"name": "payments", "annotations": {
            "linkerd.io/inject": "enabled", "config.linkerd.io/default-inbound-policy": "deny"}})
        k8s.core.v1.Namespace("unmeshed", metadata={"name": "unmeshed"})
        k8s.apiextensions.CustomResource("payments-api-server", api_version="policy.linkerd.io/v1beta3",
            kind="Server", metadata={"name": "payments-api", "namespace": "payments"},
            spec={"podSelector": {"matchLabels": {"app": "payments-api"}}, "port": 8443, "accessPolicy": "deny"})
    """, []),
    # ---------------------------------------------------------------- gmsa-no-stored-credentials
    Case("gmsa-no-stored-credentials", "ccg-plugin-with-stored-credential", """
        def credspec(name, host=None):
            ad = {"GroupManagedServiceAccounts": [{"Name": "gmsa-ledgersync", "Scope": "CORP"}]}
            if host:
                ad["HostAccountConfig"] = host
            return kube_object(name, {"apiVersion": "windows.k8s.io/v1", "kind": "GMSACredentialSpec",
                "metadata": {"name": name, "labels": {LABEL: "ledger-sync"}},
                "credspec": {"CmsPlugins": ["ActiveDirectory"], "ActiveDirectoryConfig": ad}}, HOLDER)
        credspec("ledger-sync-ccg", {"PortableCcgVersion": "1",
            "PluginGUID": "{859E1386-BDB4-49E8-85C7-3070B13920E1}",
            "PluginInput": "arn:aws:secretsmanager:us-east-1:111122223333:secret:gmsa-user"})
        credspec("ledger-sync-literal", {"PortableCcgVersion": "1", "PluginGUID": "{00000000}",
                                         "PluginInput": "CORP\\\\svc-gmsa:Winter2024!"})
    """, [("ledger-sync-ccg", "agent ledger-sync: credspec 'ledger-sync-ccg' has a HostAccountConfig"),
          ("ledger-sync-literal", "carries a literal credential in HostAccountConfig.PluginInput")]),
    Case("gmsa-no-stored-credentials", "domain-joined-host", """
        kube_object("ledger-sync-credspec", {"apiVersion": "windows.k8s.io/v1", "kind": "GMSACredentialSpec",
            "metadata": {"name": "ledger-sync"}, "credspec": {"CmsPlugins": ["ActiveDirectory"],
            "ActiveDirectoryConfig": {"GroupManagedServiceAccounts": [{"Name": "gmsa-ledgersync", "Scope": "CORP"}]}}},
            HOLDER)
    """, []),
    # ---------------------------------------------------------------- gmsa-password-interval
    Case("gmsa-password-interval", "monthly-rotation", """
        ssm.Document("ledger-sync-dsc", document_type="Command", content=json.dumps({"schemaVersion": "2.2",
            "mainSteps": [{"action": "aws:runPowerShellScript", "name": "dsc", "inputs": {"runCommand": [
                "$newGmsa = @{ Name = 'gmsa-ledgersync'", "ManagedPasswordIntervalInDays = [int]'30' }",
                "New-ADServiceAccount @newGmsa"]}}]}))
        ssm.Document("legacy-dsc", document_type="Command", content=json.dumps({"schemaVersion": "2.2",
            "mainSteps": [{"action": "aws:runPowerShellScript", "name": "dsc", "inputs": {"runCommand": [
                "New-ADServiceAccount -Name 'gmsa-old' -ManagedPasswordIntervalInDays 7"]}}]}))
    """, [("ledger-sync-dsc", "'ledger-sync-dsc' creates a gMSA whose password changes "
                              "every 30 days, above the stack's limit of 1"),
          ("legacy-dsc", "every 7 days, above the stack's limit of 1 (limits.maxGmsaPasswordIntervalDays)")]),
    Case("gmsa-password-interval", "daily-or-within-a-raised-limit", """
        ssm.Document("ledger-sync-dsc", document_type="Command", content=json.dumps({"schemaVersion": "2.2",
            "mainSteps": [{"action": "aws:runPowerShellScript", "name": "dsc", "inputs": {"runCommand": [
                "ManagedPasswordIntervalInDays = [int]'1'", "Install-ADServiceAccount -Identity 'gmsa-x'"]}}]}))
        ssm.Document("weekly-dsc", document_type="Command", content=json.dumps({"schemaVersion": "2.2",
            "mainSteps": [{"action": "aws:runPowerShellScript", "name": "dsc", "inputs": {"runCommand": [
                "New-ADServiceAccount -Name 'gmsa-w' -ManagedPasswordIntervalInDays 7"]}}]}))
    """, [], config={"gmsa-password-interval": {"maxGmsaPasswordIntervalDays": 7}}),
    # ---------------------------------------------------------------- one-identity-per-agent
    Case("one-identity-per-agent", "shared-and-missing-identities", """
        bom({"agent-cortex": agent("spiffe://dev/ns/agents/sa/agent-cortex"),
             "invoice-processor": agent("spiffe://dev/ns/finance/sa/invoice-processor"),
             "ledger-sync": agent("spiffe://dev/windows/hosts/gmsa", suspended=True),
             "report-summarizer": agent("spiffe://dev/vm/report-summarizer")})
        registration("agent-cortex-reg", "agent-cortex", "spiffe://dev/ns/agents/sa/agent-cortex")
        registration("debug-reg", None, "spiffe://dev/ns/agents/sa/agent-cortex")
        registration("invoice-processor-reg", "invoice-processor", "spiffe://dev/ns/finance/sa/other")
        registration("ledger-sync-reg", "ledger-sync", "spiffe://dev/windows/hosts/gmsa")
        registration("ghost-reg", "ghost", "spiffe://dev/ns/x/sa/ghost")
    """, [(None, "agent report-summarizer: has no SPIRE registration issuing spiffe://dev/vm/report-summarizer"),
          ("invoice-processor-reg", "agent invoice-processor: registration 'invoice-processor-reg' issues "
                                    "spiffe://dev/ns/finance/sa/other, not the agent's identity"),
          ("ledger-sync-reg", "agent ledger-sync: is suspended but registration 'ledger-sync-reg'"),
          ("ghost-reg", "is labelled for agent 'ghost', which has no manifest")]),
    Case("one-identity-per-agent", "duplicate-spiffe-id-across-agents", """
        bom({"agent-cortex": agent("spiffe://dev/ns/agents/sa/agent-cortex"),
             "invoice-processor": agent("spiffe://dev/ns/finance/sa/invoice-processor")})
        registration("agent-cortex-reg", "agent-cortex", "spiffe://dev/ns/agents/sa/agent-cortex")
        registration("invoice-processor-reg", "invoice-processor", "spiffe://dev/ns/agents/sa/agent-cortex")
    """, [("agent-cortex-reg", "SPIFFE ID spiffe://dev/ns/agents/sa/agent-cortex is issued to 2 workloads "
                               "(agent-cortex, invoice-processor)"),
          ("invoice-processor-reg", "SPIFFE ID spiffe://dev/ns/agents/sa/agent-cortex is issued to 2"),
          ("invoice-processor-reg", "agent invoice-processor: registration 'invoice-processor-reg' issues "
                                    "spiffe://dev/ns/agents/sa/agent-cortex, not the agent's identity")]),
    Case("one-identity-per-agent", "one-each", """
        bom({"agent-cortex": agent("spiffe://dev/ns/agents/sa/agent-cortex"),
             "report-summarizer": agent("spiffe://dev/vm/report-summarizer"),
             "ledger-sync": agent("spiffe://dev/windows/hosts/gmsa", suspended=True)})
        registration("agent-cortex-reg", "agent-cortex", "spiffe://dev/ns/agents/sa/agent-cortex")
        registration("gw-payments-reg", None, "spiffe://dev/ns/{{ .PodMeta.Namespace }}/sa/gw")
        for kind, sid, parent in (("node", "spiffe://dev/node/report-summarizer", "spiffe://dev/spire/server"),
                                  ("agent", "spiffe://dev/vm/report-summarizer", "spiffe://dev/node/report-summarizer")):
            k8s.apiextensions.CustomResource(f"report-summarizer-{kind}", api_version="spire.spiffe.io/v1alpha1",
                kind="ClusterStaticEntry", metadata={"name": f"report-summarizer-{kind}",
                                                     "labels": {LABEL: "report-summarizer"}},
                spec={"spiffeID": sid, "parentID": parent, "selectors": ["unix:uid:1001"]})
    """, []),
    Case("one-identity-per-agent", "agent-on-a-gateways-service-account", """
        bom({"slack-impostor": agent("spiffe://dev/ns/integrations/sa/gw-slack-gateway",
                                     mesh="gw-slack-gateway.integrations.serviceaccount.identity.linkerd.cluster.local")})
        k8s.core.v1.ServiceAccount("gw-sa", metadata={"name": "gw-slack-gateway", "namespace": "integrations"})
        deployment("gw-slack-gateway", {"serviceAccountName": "gw-slack-gateway", "containers": []},
                   labels={"agentpassport.dev/gateway": "slack-gateway"})
        registration("slack-impostor-reg", "slack-impostor", "spiffe://dev/ns/integrations/sa/gw-slack-gateway",
                     namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "integrations"}},
                     workloadSelectorTemplates=["k8s:ns:integrations", "k8s:sa:gw-slack-gateway"])
    """, [("slack-impostor-reg", "agent slack-impostor: registration 'slack-impostor-reg' selects pods running as "
                                 "integrations/gw-slack-gateway, which is the platform's (ServiceAccount "
                                 "integrations/gw-slack-gateway"),
          (None, "agent slack-impostor: runs as integrations/gw-slack-gateway, which is the platform's")]),
    Case("one-identity-per-agent", "two-agents-one-service-account", """
        mesh = "agent-cortex.agents.serviceaccount.identity.linkerd.cluster.local"
        bom({"agent-cortex": agent("spiffe://dev/ns/agents/sa/agent-cortex", mesh=mesh, suspended=True),
             "cortex-twin": agent("spiffe://dev/agents/cortex-twin", mesh=mesh),
             "labelled-twin": agent("spiffe://dev/agents/labelled-twin", mesh=mesh)})
        sel = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agents"}},
               "workloadSelectorTemplates": ["k8s:ns:agents", "k8s:sa:agent-cortex"]}
        registration("cortex-twin-reg", "cortex-twin", "spiffe://dev/agents/cortex-twin",
                     podSelector={"matchLabels": {"app": "a"}}, **sel)
        registration("labelled-twin-reg", "labelled-twin", "spiffe://dev/agents/labelled-twin",
                     podSelector={"matchLabels": {"app": "b"}}, **sel)
    """, [("labelled-twin-reg", "agent labelled-twin: registration 'labelled-twin-reg' selects ServiceAccount "
                                "agents/agent-cortex, as registration 'cortex-twin-reg' of agent cortex-twin does"),
          (None, "agent cortex-twin: its mesh identity agent-cortex.agents.serviceaccount.identity.linkerd."
                 "cluster.local is also agent agent-cortex's"),
          (None, "agent labelled-twin: its mesh identity agent-cortex.agents.serviceaccount")]),
    Case("one-identity-per-agent", "vm-twins", """
        bom({"report-summarizer": agent("spiffe://dev/vm/report-summarizer"),
             "summarizer-twin": agent("spiffe://dev/vm/summarizer-twin"),
             "other-uid": agent("spiffe://dev/vm/other-uid")})
        def static(name, kind, sid, parent, selectors):
            k8s.apiextensions.CustomResource(f"{kind}.{name}", api_version="spire.spiffe.io/v1alpha1",
                kind="ClusterStaticEntry", metadata={"name": f"{kind}.{name}", "labels": {LABEL: name}},
                spec={"spiffeID": sid, "parentID": parent, "selectors": selectors})
        for name, uid in (("report-summarizer", "1001"), ("summarizer-twin", "1001"), ("other-uid", "1002")):
            static(name, "node", f"spiffe://dev/node/{name}", "spiffe://dev/spire/server",
                   ["aws_iid:region:us-east-1", "aws_iid:tag:agentpassport:role:report-summarizer"])
            static(name, "agent", f"spiffe://dev/vm/{name}", f"spiffe://dev/node/{name}", [f"unix:uid:{uid}"])
    """, [("agent.summarizer-twin", "agent summarizer-twin: one host process can match both registration "
                                    "'agent.summarizer-twin' and registration 'agent.report-summarizer' of agent "
                                    "report-summarizer")]),
    Case("one-identity-per-agent", "dns-names-of-services-and-other-agents", """
        bom({"dns-impostor": agent("spiffe://dev/ns/agents/sa/dns-impostor"),
             "serves-a": agent("spiffe://dev/ns/agents/sa/serves-a"),
             "serves-b": agent("spiffe://dev/ns/agents/sa/serves-b")})
        k8s.core.v1.Service("gw-svc", metadata={"name": "gw-slack-gateway", "namespace": "integrations"},
                            spec={"ports": [{"port": 8443}]})
        k8s.apiextensions.CustomResource("slack-server", api_version="policy.linkerd.io/v1beta3", kind="Server",
            metadata={"name": "slack-gateway", "namespace": "integrations",
                      "labels": {"agentpassport.dev/service": "slack-gateway"}},
            spec={"podSelector": {"matchLabels": {"app": "slack-gateway"}}, "port": 8080})
        for name, dns in (("dns-impostor", ["gw-slack-gateway.integrations.svc",
                                            "slack-gateway.integrations.svc.cluster.local"]),
                          ("serves-a", ["reports.agents.svc"]), ("serves-b", ["reports.agents.svc.cluster.local"])):
            registration(f"{name}-reg", name, f"spiffe://dev/ns/agents/sa/{name}", dnsNameTemplates=dns,
                         workloadSelectorTemplates=["k8s:ns:agents", f"k8s:sa:{name}"])
    """, [("dns-impostor-reg", "claims DNS name gw-slack-gateway.integrations.svc, a name of Service "
                               "integrations/gw-slack-gateway"),
          ("dns-impostor-reg", "claims DNS name slack-gateway.integrations.svc.cluster.local, a name of service "
                               "'slack-gateway'"),
          ("serves-b-reg", "agent serves-b: registration 'serves-b-reg' claims DNS name reports.agents.svc.cluster."
                           "local, as registration 'serves-a-reg' of agent serves-a does")]),
    # ---------------------------------------------------------------- grants-enforced
    Case("grants-enforced", "nothing-enforces", """
        bom({"agent-cortex": agent("spiffe://dev/ns/agents/sa/agent-cortex",
                                   mesh="agent-cortex.agents.serviceaccount.identity.linkerd.cluster.local",
                                   subsystems=["spire", "mesh", "vault", "aws"],
                                   grants=[{"kind": "http", "service": "inference"},
                                           {"kind": "database", "cluster": "main", "database": "incidents"},
                                           {"kind": "aws", "role": "reports"},
                                           {"kind": "vault", "path": "secret/data/triage"}])})
    """, [(None, "agent agent-cortex: http grant to inference: no Linkerd AuthorizationPolicy for the "
                 "service requires a MeshTLSAuthentication naming agent-cortex.agents.serviceaccount"),
          (None, "agent agent-cortex: database grant on main/incidents has no Vault database role"),
          (None, "agent agent-cortex: aws grant 'reports' has no IAM role agent-cortex-reports"),
          (None, "agent agent-cortex: vault grant on secret/data/triage is not a path of the agent's "
                 "Vault policy agent-agent-cortex")]),
    Case("grants-enforced", "another-agents-role-and-policy-do-not-count", """
        bom({"billing": agent("spiffe://dev/ns/fin/sa/billing", subsystems=["spire", "vault"],
                              grants=[{"kind": "database", "cluster": "main", "database": "ledger"},
                                      {"kind": "vault", "path": "secret/data/x"}])})
        # agent billing-reports' role and policy: a name prefix and a longer path must not count
        vault.database.SecretBackendRole("billing-reports-main-ledger", name="billing-reports-main-ledger",
            backend="db-main", db_name="main", creation_statements=["x"], default_ttl=300, max_ttl=600)
        vault.Policy("agent-billing-reports", name="agent-billing-reports",
                     policy='path "secret/data/xyz" { capabilities = ["read"] }')
    """, [(None, "agent billing: database grant on main/ledger has no Vault database role billing-main-ledger"),
          (None, "agent billing: vault grant on secret/data/x is not a path of the agent's Vault policy")]),
    Case("grants-enforced", "every-grant-enforced", """
        mesh_id = "agent-cortex.agents.serviceaccount.identity.linkerd.cluster.local"
        bom({"agent-cortex": agent("spiffe://dev/ns/agents/sa/agent-cortex", mesh=mesh_id,
                                   subsystems=["spire", "mesh", "authz", "vault", "aws"],
                                   grants=[{"kind": "http", "service": "payments-api"},
                                           {"kind": "database", "cluster": "main", "database": "billing_db"},
                                           {"kind": "aws", "role": "reports"},
                                           {"kind": "vault", "path": "secret/data/triage"}]),
             "retired": agent("spiffe://dev/ns/x/sa/retired", suspended=True,
                              grants=[{"kind": "aws", "role": "x"}], subsystems=[])})
        def cr(name, version, kind, spec):
            return k8s.apiextensions.CustomResource(name, api_version=f"policy.linkerd.io/{version}",
                kind=kind, metadata={"name": name, "namespace": "payments"}, spec=spec)
        cr("gw-payments-api-clients", "v1alpha1", "MeshTLSAuthentication", {"identities": [mesh_id]})
        cr("gw-payments-api-authz", "v1alpha1", "AuthorizationPolicy", {
            "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "gw-payments-api"},
            "requiredAuthenticationRefs": [{"group": "policy.linkerd.io", "kind": "MeshTLSAuthentication",
                                            "name": "gw-payments-api-clients"}]})
        deployment("gw-payments-api", {"automountServiceAccountToken": False, "containers": [
            {"name": "opa", "image": "opa"}]}, labels={"agentpassport.dev/gateway": "payments-api"})
        k8s.core.v1.ConfigMap("gw-payments-api-data", data={"data.json": json.dumps(
            {"service": "payments-api", "agents": {"spiffe://dev/ns/agents/sa/agent-cortex": {}}})})
        vault.database.SecretBackendRole("agent-cortex-main-billing-db", name="agent-cortex-main-billing-db",
            backend="db-main", db_name="main", creation_statements=["x"], default_ttl=300, max_ttl=600)
        iam.Role("agent-cortex-reports", name="agent-cortex-reports", assume_role_policy="{}")
        vault.Policy("agent-cortex-policy", name="agent-agent-cortex",
                     policy='path "secret/data/triage" { capabilities = ["read"] }')
    """, []),
    Case("grants-enforced", "service-account-reference-and-suspended-agent", """
        bom({"invoice-processor": agent("spiffe://dev/ns/finance/sa/invoice-processor",
                mesh="invoice-processor.finance.serviceaccount.identity.linkerd.cluster.local",
                subsystems=["spire", "mesh"], grants=[{"kind": "http", "service": "inference"}]),
             "retired": agent("spiffe://dev/ns/x/sa/retired", suspended=True, subsystems=["mesh"],
                              grants=[{"kind": "http", "service": "inference"}])})
        k8s.apiextensions.CustomResource("inference-clients", api_version="policy.linkerd.io/v1alpha1",
            kind="MeshTLSAuthentication", metadata={"name": "inference-clients", "namespace": "ml"},
            spec={"identityRefs": [{"kind": "ServiceAccount", "name": "invoice-processor", "namespace": "finance"}]})
        k8s.apiextensions.CustomResource("inference-route-authz", api_version="policy.linkerd.io/v1alpha1",
            kind="AuthorizationPolicy", metadata={"name": "route-authz", "namespace": "ml",
                                                 "labels": {"agentpassport.dev/service": "inference"}},
            spec={"targetRef": {"group": "policy.linkerd.io", "kind": "HTTPRoute", "name": "route"},
                  "requiredAuthenticationRefs": [{"group": "policy.linkerd.io", "kind": "MeshTLSAuthentication",
                                                  "name": "inference-clients"}]})
    """, []),
    # ---------------------------------------------------------------- resource-count-ceiling
    Case("resource-count-ceiling", "over-ceiling", """
        for i in range(4):
            tls.PrivateKey(f"key-{i}", algorithm="ECDSA")
    """, [(None, "the stack holds 5 resources, above the ceiling of 3")],  # 4 keys + the prelude's HOLDER
        config={"resource-count-ceiling": {"maxResources": 3}}),
    Case("resource-count-ceiling", "under-ceiling", """
        for i in range(3):
            tls.PrivateKey(f"key-{i}", algorithm="ECDSA")
    """, []),
    # ---------------------------------------------------------------- no-state-root-key-in-prod
    Case("no-state-root-key-in-prod", "tls-root-in-prod", """
        key = tls.PrivateKey("root-key", algorithm="ECDSA", ecdsa_curve="P256")
        tls.SelfSignedCert("root-ca", private_key_pem=key.private_key_pem, is_ca_certificate=True,
                           validity_period_hours=87600, allowed_uses=["cert_signing"],
                           subject={"common_name": "root"})
    """, [("root-key", "root CA 'root-ca' of production stack prod is signed by tls PrivateKey 'root-key'")],
        stack="prod"),
    Case("no-state-root-key-in-prod", "tls-root-in-dev", """
        key = tls.PrivateKey("root-key", algorithm="ECDSA", ecdsa_curve="P256")
        tls.SelfSignedCert("root-ca", private_key_pem=key.private_key_pem, is_ca_certificate=True,
                           validity_period_hours=87600, allowed_uses=["cert_signing"],
                           subject={"common_name": "root"})
    """, []),
    # ---------------------------------------------------------------- spire-rate-limits-on
    Case("spire-rate-limits-on", "signing-off", """
        k8s.core.v1.ConfigMap("spire-server", data={"server.conf": json.dumps(
            {"server": {"trust_domain": "dev", "ratelimit": {"attestation": True, "signing": False}}})})
    """, [("spire-server", "turns off the signing rate limit")]),
    Case("spire-rate-limits-on", "both-off", """
        k8s.core.v1.ConfigMap("spire-server", data={"server.conf": json.dumps(
            {"server": {"ratelimit": {"attestation": False, "signing": False}}})})
    """, [("spire-server", "turns off the attestation and signing rate limit")]),
    Case("spire-rate-limits-on", "explicit-or-default", """
        k8s.core.v1.ConfigMap("spire-server", data={"server.conf": json.dumps(
            {"server": {"ratelimit": {"attestation": True, "signing": True}}})})
        k8s.core.v1.ConfigMap("spire-server-b", data={"server.conf": json.dumps({"server": {}})})
        k8s.core.v1.ConfigMap("other", data={"server.conf": "server { ratelimit { signing = false } }"})
    """, []),
    # ---------------------------------------------------------------- vault-rate-limit-quotas
    Case("vault-rate-limit-quotas", "unguarded-login-and-creds", """
        import pulumi_vault.jwt as vault_jwt
        vault_jwt.AuthBackend("agents-jwt", path="spiffe-jwt", type="jwt", jwks_url="https://x/keys")
        vault.AuthBackend("agents-cert", path="spiffe-cert", type="cert")
        vault.AuthBackend("humans-ldap", path="ldap", type="ldap")
        vault.Mount("db-main", path="db-main", type="database")
        vault.Mount("kv", path="secret", type="kv-v2")
        vault.QuotaRateLimit("creds-other", name="creds-other", path="db-other/creds/*", rate=4)
        vault.QuotaRateLimit("too-loose", name="too-loose", path="auth/spiffe-cert/login", rate=5000)
    """, [("agents-jwt", "the login path auth/spiffe-jwt/login has no rate-limit quota"),
          ("agents-cert", "the login path auth/spiffe-cert/login has no rate-limit quota"),
          ("db-main", "the database mount db-main/creds has no rate-limit quota"),
          ("too-loose", "allows 5000 requests per interval per client, above the pack's maxRate (1000)")]),
    Case("vault-rate-limit-quotas", "guarded", """
        import pulumi_vault.jwt as vault_jwt
        jwt = vault_jwt.AuthBackend("agents-jwt", path="spiffe-jwt", type="jwt", jwks_url="https://x/keys")
        vault.AuthBackend("agents-cert", path="spiffe-cert", type="cert")
        main = vault.Mount("db-main", path="db-main", type="database")
        vault.Mount("db-other", path="db-other", type="database")
        vault.QuotaRateLimit("login", name="login", path=jwt.path.apply(lambda p: f"auth/{p}/login"), rate=4)
        vault.QuotaRateLimit("cert-mount", name="cert-mount", path="auth/spiffe-cert", rate=4)
        vault.QuotaRateLimit("creds", name="creds", path=main.path.apply(lambda p: f"{p}/creds/*"), rate=4)
        vault.QuotaRateLimit("other", name="other", path="db-other/", rate=10)
    """, []),
    # ---------------------------------------------------------------- ca-chain-lifetimes
    Case("ca-chain-lifetimes", "issuer-outlives-anchor", """
        key = tls.PrivateKey("linkerd-anchor-key", algorithm="ECDSA")
        anchor = tls.SelfSignedCert("linkerd-anchor", private_key_pem=key.private_key_pem,
            is_ca_certificate=True, validity_period_hours=8760, allowed_uses=["cert_signing"])
        tls.LocallySignedCert("linkerd-issuer", ca_cert_pem=anchor.cert_pem, ca_private_key_pem=key.private_key_pem,
            cert_request_pem="csr", is_ca_certificate=True, validity_period_hours=87600,
            allowed_uses=["cert_signing"])
    """, [("linkerd-issuer", "Linkerd issuer 'linkerd-issuer' (3650d) outlives or matches its issuer "
                             "'linkerd-anchor' (365d)")]),
    Case("ca-chain-lifetimes", "issuer-within-anchor", """
        key = tls.PrivateKey("linkerd-anchor-key", algorithm="ECDSA")
        anchor = tls.SelfSignedCert("linkerd-anchor", private_key_pem=key.private_key_pem,
            is_ca_certificate=True, validity_period_hours=87600, allowed_uses=["cert_signing"])
        tls.LocallySignedCert("linkerd-issuer", ca_cert_pem=anchor.cert_pem, ca_private_key_pem=key.private_key_pem,
            cert_request_pem="csr", is_ca_certificate=True, validity_period_hours=2160,
            allowed_uses=["cert_signing"])
    """, []),
]


def graph_of(program: str, stack: str, tmp_path: Path) -> Graph:
    """Run a small program through the project's mock harness."""
    (tmp_path / "__main__.py").write_text(PRELUDE + textwrap.dedent(program), encoding="utf-8")
    return run_program(stack, tmp_path, config={})


@pytest.mark.parametrize("case", CASES, ids=[f"{c.policy}:{c.id}" for c in CASES])
def test_policy_case(case: Case, tmp_path: Path) -> None:
    graph = graph_of(case.program, case.stack, tmp_path)
    (policy,) = [p for p in policies() if p.name == case.policy]
    found = evaluate(graph, case.config, [policy])
    got = sorted(((v.urn.rsplit("::", 1)[-1] if v.urn else None, v.message) for v in found),
                 key=lambda x: (x[0] or "", x[1]))
    assert len(got) == len(case.expected), got
    for name, phrase in case.expected:
        assert any(n == name and phrase in message for n, message in got), (name, phrase, got)
    assert all(v.level == "mandatory" for v in found)


def test_every_policy_has_a_violating_and_a_compliant_case() -> None:
    names = {p.name for p in policies()}
    violating = {c.policy for c in CASES if c.expected}
    compliant = {c.policy for c in CASES if not c.expected}
    assert violating == names
    assert compliant == names
