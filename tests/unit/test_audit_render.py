"""The audit pipeline's pure half: settings, collector config, OTTL, Kubernetes objects, IAM documents."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import StackConfig, build_stack_config
from components.config.audit import AuditConfig
from components.errors import ConfigError
from components.platform_model import Platform, load_platform
from components.render import audit as ra
from components.render.observe.logs import FIELD_RENAMES

ROOT = Path(__file__).resolve().parents[2]
ROLE = "arn:aws:iam::111122223333:role/audit-writer"
PROVIDER = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC123"


def _platform(stack: str = "prod", subsystems: dict[str, bool] | None = None, **audit: Any) -> Platform:
    base = load_platform(stack)
    cfg = base.config
    on = cfg.subsystems.model_copy(update={"audit": True, **(subsystems or {})})
    cfg = cfg.model_copy(update={"subsystems": on, "audit": AuditConfig.model_validate(audit)})
    return Platform(base.stack, cfg, base.config_file, base.agents, base.services)


def _pack() -> Any:
    pack_dir = ROOT / "policy-packs" / "no-static-credentials"
    sys.path.insert(0, str(pack_dir))
    try:
        spec = importlib.util.spec_from_file_location("policies", pack_dir / "policies" / "__init__.py",
                                                      submodule_search_locations=[str(pack_dir / "policies")])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["policies"] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(pack_dir))


# --------------------------------------------------------------------------- settings


def test_retention_is_whole_days_default_a_year() -> None:
    assert AuditConfig().retention_days == 365
    assert AuditConfig(retention="2555d").retention_days == 2555
    for bad, why in (("36h", "whole days"), ("12h", "whole days"), ("36501d", "100 years")):
        with pytest.raises(ValueError, match=why):
            AuditConfig(retention=bad)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        AuditConfig.model_validate({"accessKey": "AKIA..."})  # there is no place for a key


def test_bucket_retention_must_agree_with_audit_retention() -> None:
    values = {"environment": "dev", "trustDomain": "dev.acme.internal",
              "aws": {"auditBucket": {"retentionDays": 400}}}
    with pytest.raises(ConfigError) as err:
        build_stack_config(values, "stacks/Pulumi.dev.yaml")
    (problem,) = err.value.problems
    assert problem.field == "agent-passport:aws.auditBucket.retentionDays"
    assert "audit.retention" in problem.message
    ok = build_stack_config({**values, "audit": {"retention": "400d"}}, "stacks/Pulumi.dev.yaml")
    assert ok.audit.retention_days == ok.aws.audit_bucket.retention_days == 400


@pytest.mark.parametrize(("subsystems", "audit", "field", "phrase"), [
    ({"aws": False}, {"credentials": "irsa", "roleArn": ROLE}, "bucket", "Object Lock bucket"),
    ({"aws": False}, {"credentials": "irsa", "bucket": "audit-b", "eksOidcProviderArn": PROVIDER},
     "roleArn", "collector's IAM role"),
    ({}, {"credentials": "roles-anywhere"}, "image", "aws_signing_helper"),
    ({}, {"credentials": "pod-identity"}, "eksClusterName", "EKS cluster name"),
    ({}, {"credentials": "irsa"}, "eksOidcProviderArn", "OIDC provider"),
    ({}, {"credentials": "irsa", "eksOidcProviderArn": PROVIDER, "endpoint": "http://minio.local:9000"},
     "endpoint", "not https"),
])
def test_each_missing_piece_is_one_problem_naming_the_field(
        subsystems: dict[str, bool], audit: dict[str, Any], field: str, phrase: str) -> None:
    platform = _platform(subsystems=subsystems, **audit)
    problems = ra.audit_problems(platform.config, platform.config_file)
    assert [p.field for p in problems] == [f"agent-passport:audit.{field}"]
    assert phrase in problems[0].message and problems[0].file == "stacks/Pulumi.prod.yaml"
    with pytest.raises(ConfigError):
        ra.audit_artifacts(platform)


def test_off_by_default_and_nothing_rendered() -> None:
    prod = load_platform("prod")
    assert prod.config.subsystems.audit is False
    assert ra.audit_problems(prod.config, prod.config_file) == []
    assert list(ra.audit_artifacts(prod)) == []


# --------------------------------------------------------------------------- collector config


def _irsa(**extra: Any) -> Platform:
    return _platform(credentials="irsa", eksOidcProviderArn=PROVIDER, **extra)


def test_collector_reads_each_source_and_writes_the_worm_bucket_without_a_key() -> None:
    platform = _irsa()
    target = ra.AuditTarget(bucket="audit-b", region="eu-west-1", kms_key_arn=None, role_arn=ROLE)
    conf = ra.collector_config(platform, target)
    receivers = conf["receivers"]
    assert sorted(receivers) == ["file_log/envoy", "file_log/linkerd", "file_log/opa", "file_log/spire",
                                 "file_log/vault"]
    assert receivers["file_log/spire"]["include"] == [
        "/var/log/pods/spire-system_spire-server-*/spire-server/*.log"]
    assert receivers["file_log/opa"]["include"] == ["/var/log/pods/*_gw-*/opa/*.log"]
    assert receivers["file_log/linkerd"]["resource"][ra.DATASET_ATTR] == "linkerd.authz"
    # only audit records leave the node: every source but SPIRE filters its lines
    filters = {name: [o for o in r["operators"] if o["type"] == "filter"] for name, r in receivers.items()}
    assert filters["file_log/spire"] == []
    assert filters["file_log/linkerd"][0]["expr"] == 'not (body matches "(Request|Connection) denied")'
    assert all(r["storage"] == "file_storage" and r["start_at"] == "beginning" for r in receivers.values())
    exporter = conf["exporters"]["awss3/worm"]
    uploader = exporter["s3uploader"]
    assert uploader["s3_bucket"] == "audit-b" and uploader["region"] == "eu-west-1"
    assert uploader["s3_base_prefix"] == "agentpassport/prod"
    assert uploader["s3_partition_format"] == "year=%Y/month=%m/day=%d/hour=%H"
    assert exporter["marshaler"] == "body" and exporter["resource_attrs_to_s3"] == {"s3_prefix": ra.DATASET_ATTR}
    assert exporter["retry_on_failure"]["max_elapsed_time"] == "0s"  # lines wait on disk, never dropped
    assert not {"access_key", "secret_key", "role_arn", "endpoint"} & set(uploader)
    assert conf["service"]["pipelines"]["logs"] == {
        "receivers": sorted(receivers), "processors": ["transform/ecs", "batch"], "exporters": ["awss3/worm"]}
    text = yaml.safe_dump(conf)
    assert _pack().collector_key_settings(text) == []
    # a test or an S3-compatible store names its endpoint (path-style)
    local = ra.collector_config(platform, target, endpoint="http://127.0.0.1:9000")["exporters"]["awss3/worm"]
    assert local["s3uploader"]["endpoint"] == "http://127.0.0.1:9000"
    assert local["s3uploader"]["s3_force_path_style"] is True


def test_sources_follow_the_subsystems_and_the_overrides() -> None:
    platform = _irsa(subsystems={"mesh": False}, sources={"vault": [], "spire": ["/logs/spire/*.log"]})
    globs = ra.source_globs(platform)
    assert "linkerd" not in globs and "vault" not in globs  # mesh off; vault turned off by []
    assert globs["spire"] == ["/logs/spire/*.log"]


def test_statements_mask_first_map_every_rename_and_emit_the_document() -> None:
    platform = _irsa()
    statements = ra.log_statements(platform)
    n = len(ra.MASK_PATTERNS)
    assert [s.startswith("replace_pattern(log.body") for s in statements[:n]] == [True] * n
    assert statements[n].startswith('set(log.cache["raw"], ParseJSON(log.body))')
    assert statements[-1] == 'set(log.body, log.cache["doc"])'
    joined = "\n".join(statements)
    for dataset, renames in FIELD_RENAMES.items():
        for r in renames:
            assert f"set({ra.doc(r.target)}, {ra.raw(r.source)}) where {ra.doc('event.dataset')} == " \
                   f'"{dataset}"' in joined, (dataset, r)
    # Vault: JWT logins become spiffe_id; any other (human) name never reaches the bucket
    assert '"^spiffe\\\\-jwt\\\\-spiffe://"' in joined
    assert f'set({ra.doc("user.name")}, "redacted")' in joined
    assert "SHA256" not in joined
    keyed = "\n".join(ra.log_statements(_irsa(pseudonymKeySecret="auditPseudonymKey")))
    assert '"${env:AUDIT_PSEUDONYM_KEY}"' in keyed and "SHA256" in keyed
    # every mesh identity of an active agent maps to its SPIFFE ID
    for agent in platform.active_agents:
        lid = agent.identity.linkerd_identity
        if lid:
            assert f'== "{lid}"' in joined and f'"{agent.identity.spiffe_id}")' in joined


def test_credentials_are_masked_by_the_patterns_the_collector_runs() -> None:
    lines = {
        '{"headers":{"Authorization":"Bearer abc.def.ghi","x-request-id":"r1"}}':
            '{"headers":{"Authorization":"[masked]","x-request-id":"r1"}}',
        '{"cookie": "session=s3cr3t", "proxy-authorization":"Basic dXNlcjpwYXNz"}':
            '{"cookie": "[masked]", "proxy-authorization":"[masked]"}',
        "GET /x authorization=Bearer abcdefghijkl client=1": "GET /x authorization=[masked] client=1",
        "token in text: bearer abcdefghijklmnop": "token in text: bearer [masked]",
    }
    for line, want in lines.items():
        assert mask(line) == want


def mask(line: str) -> str:
    """The collector's masking, in order (Go RE2 and Python agree on these patterns; ``$1`` is the
    only group a replacement uses, and nothing else in it is special to Go)."""
    for pattern, replacement in ra.MASK_PATTERNS:
        line = re.sub(pattern, lambda m, r=replacement: r.replace("$1", m.group(1)), line)
    return line


SECRET = "s3cr3tVALUE42"


@pytest.mark.parametrize(("line", "want"), [
    # (A) credentials in query strings: url.original, event.original, Go's \u0026 for &
    ('{"url":"/v1/x?access_token=' + SECRET + '&limit=5"}', '{"url":"/v1/x?access_token=[masked]&limit=5"}'),
    ('{"path":"/v1/x?limit=5\\u0026api_key=' + SECRET + '"}', '{"path":"/v1/x?limit=5\\u0026api_key=[masked]"}'),
    ("GET /cb?code=" + SECRET + "&state=abc HTTP/1.1", "GET /cb?code=[masked]&state=abc HTTP/1.1"),
    ('{"u":"/x?password=' + SECRET + ';token=' + SECRET + '"}', '{"u":"/x?password=[masked];token=[masked]"}'),
    ('{"u":"/b/k?X-Amz-Signature=' + SECRET + '&secret=' + SECRET + '"}',
     '{"u":"/b/k?X-Amz-Signature=[masked]&secret=[masked]"}'),
    ('{"u":"/x?keyword=ok&signature=' + SECRET + '#f"}', '{"u":"/x?keyword=ok&signature=[masked]#f"}'),
    # OPA's parsed_query: the whole object
    ('{"input":{"parsed_query":{"access_token":["' + SECRET + '"],"limit":["5"]},"parsed_path":["v1"]}}',
     '{"input":{"parsed_query":"[masked]","parsed_path":["v1"]}}'),
    # (B) a header as a list (Envoy/OPA headers maps, Go's http.Header)
    ('{"authorization":["Basic ' + SECRET + '"],"x":1}', '{"authorization":"[masked]","x":1}'),
    ('{"Cookie": ["a=' + SECRET + '", "b=' + SECRET + '"]}', '{"Cookie": "[masked]"}'),
    # (C) a JSON document logged inside a JSON string
    ('{"msg":"{\\"authorization\\":\\"Basic ' + SECRET + '\\",\\"a\\":1}"}',
     '{"msg":"{\\"authorization\\":\\"[masked]\\",\\"a\\":1}"}'),
    ('{"msg":"{\\"password\\": [\\"' + SECRET + '\\"]}"}', '{"msg":"{\\"password\\": \\"[masked]\\"}"}'),
    # (D) credential keys, any case; an object under such a key (Vault's "secret") is kept
    ('{"password":"' + SECRET + '","passwd":"' + SECRET + '","Client_Secret":"' + SECRET + '"}',
     '{"password":"[masked]","passwd":"[masked]","Client_Secret":"[masked]"}'),
    ('{"token":"' + SECRET + '","secret":{"lease_id":"db/creds/x/1"}}',
     '{"token":"[masked]","secret":{"lease_id":"db/creds/x/1"}}'),
    ("login password=" + SECRET + " user=svc", "login password=[masked] user=svc"),
    ("max_token=5 n=1", "max_token=5 n=1"),  # not a credential key, only its suffix
])
def test_every_form_of_credential_is_masked(line: str, want: str) -> None:
    out = mask(line)
    assert out == want
    if out.startswith("{"):
        json.loads(out)  # the line is still the JSON the collector parses next


def test_vault_paths_that_name_a_person_are_redacted() -> None:
    from components.render.audit.ecs import PERSON_PATHS

    cases = {
        "auth/userpass/login/alice": "auth/userpass/login/redacted",
        "auth/ldap/users/bob.smith": "auth/ldap/users/redacted",
        "identity/entity/name/carol": "identity/entity/name/redacted",
        "auth/spiffe-jwt/login": "auth/spiffe-jwt/login",  # an agent's login names no one
        "database/creds/cortex": "database/creds/cortex",
    }
    for path, want in cases.items():
        assert re.sub(PERSON_PATHS, r"\1/redacted", path) == want
    assert ra.ottl_str(PERSON_PATHS) in "\n".join(ra.log_statements(_irsa()))


def test_dollars_are_escaped_for_the_collector_but_env_references_kept() -> None:
    conf = ra.collector_config(_irsa(pseudonymKeySecret="k"), ra.audit_target(_irsa().config))
    statements = conf["processors"]["transform/ecs"]["log_statements"][0]["statements"]
    joined = "\n".join(statements)
    assert "$$1" in joined and "${env:AUDIT_PSEUDONYM_KEY}" in joined
    assert re.search(r"(?<!\$)\$(?![${])", joined) is None  # no lone $ left to expand


# --------------------------------------------------------------------------- Kubernetes and IAM


def test_daemonset_reads_pod_logs_read_only_and_mounts_no_token() -> None:
    objects = ra.audit_objects(_irsa(), ra.AuditTarget(bucket="b", region="us-east-1", role_arn=ROLE))
    kinds = [o["kind"] for o in objects]
    assert kinds == ["Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"]  # irsa: no registration
    sa = objects[1]
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": ROLE}
    assert sa["automountServiceAccountToken"] is False
    pod = objects[3]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (collector,) = pod["containers"]
    assert {"name": "pod-logs", "mountPath": "/var/log/pods", "readOnly": True} in collector["volumeMounts"]
    ctx = collector["securityContext"]
    assert ctx["readOnlyRootFilesystem"] and ctx["capabilities"] == {"drop": ["ALL"]}
    assert not ctx["allowPrivilegeEscalation"]
    assert not {e["name"] for e in collector["env"]} & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_roles_anywhere_uses_the_collectors_own_svid() -> None:
    platform = _platform(credentials="roles-anywhere", image="registry.acme/otelcol-audit:0.165.0")
    target = ra.AuditTarget(bucket="b", region="us-east-1", role_arn=ROLE,
                            trust_anchor_arn="arn:aws:rolesanywhere:us-east-1:111122223333:trust-anchor/t",
                            profile_arn="arn:aws:rolesanywhere:us-east-1:111122223333:profile/p")
    objects = ra.audit_objects(platform, target)
    registration = objects[0]
    assert registration["kind"] == "ClusterSPIFFEID"
    assert registration["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": ra.COLLECTOR}}
    assert ra.collector_spiffe_id(platform.config) == (
        "spiffe://prod.agents.acme-corp.net/ns/agentpassport-audit/sa/agentpassport-audit-collector")
    cm = next(o for o in objects if o["kind"] == "ConfigMap")
    aws_config = cm["data"]["aws-config"]
    assert "credential_process = /usr/local/bin/aws_signing_helper credential-process" in aws_config
    assert f"--role-arn {ROLE}" in aws_config and "--certificate /svid/svid.pem" in aws_config
    pod = next(o for o in objects if o["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["collector", "spiffe-helper"]
    assert {"name": "svid", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}} in pod["volumes"]
    assert {"name": "AWS_CONFIG_FILE", "value": "/etc/agentpassport-audit/aws-config"} in pod["containers"][0]["env"]
    pack = _pack()
    assert [pack.collector_key_settings(v) for v in cm["data"].values()] == [[], [], []]
    trust = ra.collector_trust_policy(platform.config, target.trust_anchor_arn or "")
    assert trust["Statement"][0]["Condition"]["StringEquals"] == {
        "aws:PrincipalTag/x509SAN/URI": ra.collector_spiffe_id(platform.config)}


def test_iam_role_is_append_only_and_trusts_one_principal() -> None:
    key = "arn:aws:kms:us-east-1:111122223333:key/k"
    policy = ra.collector_policy("audit-b", "agentpassport", "prod", key, "us-east-1")
    actions = sorted(a for s in policy["Statement"] for a in s["Action"])
    assert actions == ["kms:Decrypt", "kms:GenerateDataKey", "s3:PutObject"]
    # multipart uploads (objects above 8 MiB) need kms:Decrypt, and only through S3 in the region
    (decrypt,) = [s for s in policy["Statement"] if s["Action"] == ["kms:Decrypt"]]
    assert decrypt["Resource"] == [key] and decrypt["Effect"] == "Allow"
    assert decrypt["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
    assert [s["Action"] for s in ra.collector_policy("b", "p", "dev", None, "eu-west-1")["Statement"]] == [
        ["s3:PutObject"]]
    assert policy["Statement"][0]["Resource"] == ["arn:aws:s3:::audit-b/agentpassport/prod/*"]
    irsa = ra.irsa_trust_policy(PROVIDER, "agentpassport-audit")["Statement"][0]
    assert irsa["Condition"]["StringEquals"] == {
        "oidc.eks.us-east-1.amazonaws.com/id/ABC123:sub":
            "system:serviceaccount:agentpassport-audit:agentpassport-audit-collector",
        "oidc.eks.us-east-1.amazonaws.com/id/ABC123:aud": "sts.amazonaws.com"}
    pod_identity = ra.pod_identity_trust_policy("prod-eks", "agentpassport-audit")["Statement"][0]
    assert pod_identity["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert pod_identity["Condition"]["StringEquals"]["aws:RequestTag/kubernetes-service-account"] == ra.COLLECTOR


def test_artifacts_for_review() -> None:
    arts = {a.path: a.content for a in ra.audit_artifacts(_irsa())}
    assert sorted(p for p in arts if not p.startswith("kubernetes/")) == [
        "audit/athena.sql", "audit/collector-policy.json", "audit/collector-trust-policy.json",
        "audit/collector.yaml"]
    assert "kubernetes/audit/daemonset-agentpassport-audit-agentpassport-audit-collector.yaml" in arts
    policy = json.loads(arts["audit/collector-policy.json"])
    assert policy["Statement"][0]["Resource"] == ["arn:aws:s3:::{{auditBucket}}/agentpassport/prod/*"]
    sql = arts["audit/athena.sql"]
    assert "LOCATION 's3://{{auditBucket}}/agentpassport/prod/'" in sql
    assert "'projection.dataset.values' = 'spire,vault.audit,opa.decision,envoy.access,linkerd.authz'" in sql


def test_stack_config_reads_the_audit_section() -> None:
    assert "audit" in StackConfig.model_fields
