"""The audit log pipeline, the pure half: collector config, Kubernetes objects, IAM documents.

A :class:`~components.platform_model.Platform` in, dicts and text out; no pulumi. The collector is
the OpenTelemetry Collector (``file_log`` receiver -> ``transform`` -> ``batch`` -> ``awss3``):

* one ``file_log`` receiver per source reads the kubelet's container log files on the node
  (``container`` operator: CRI/docker format, Kubernetes metadata from the path), drops lines
  that are not audit records (``filter`` operator) and tags its records with their dataset;
* ``transform/ecs`` masks credentials in the raw line, parses JSON, and builds one ECS document
  per line from the same rename table the Elasticsearch and Logstash pipelines use
  (:data:`components.render.observe.logs.FIELD_RENAMES`), keyed by ``spiffe_id`` and ``trace.id``;
* ``awss3/worm`` writes the documents, one JSON line each (``body`` marshaler), gzip-compressed,
  under ``<prefix>/<stack>/<dataset>/year=YYYY/month=MM/day=DD/hour=HH/`` in the Object Lock
  bucket, whose default retention locks every object (COMPLIANCE).

The config never carries a key: the AWS SDK takes its session from IRSA, EKS Pod Identity or
``credential_process`` (IAM Roles Anywhere with the collector's SVID). The policy pack refuses a
collector config with ``access_key``/``secret_key`` or key variables (``audit-collector-no-keys``).

The package (everything is re-exported here):

* :mod:`.common` — names, paths, datasets, the target, validation, the log sources;
* :mod:`.ecs` — the ECS mapping as OTTL statements (masking first);
* :mod:`.collector` — the collector's ``config.yaml`` and the credential helpers' files;
* :mod:`.iam` — the collector's role: append-only policy, trust per credential kind;
* :mod:`.objects` — the Kubernetes objects;
* this module — the Athena table and the artifacts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from components.platform_model import Platform
from components.render.artifacts import Artifact, kubernetes_artifacts
from components.render.audit.collector import (
    aws_shared_config,
    collector_config,
    spiffe_helper_config,
)
from components.render.audit.common import (
    BUCKET_PLACEHOLDER,
    COLLECTOR,
    CONFIG_DIR,
    DATASET_ATTR,
    DATASETS,
    KEEP_LINES,
    KMS_KEY_PLACEHOLDER,
    MASKED,
    NODE_ENV,
    PROFILE_ARN_PLACEHOLDER,
    PSEUDONYM_ENV,
    REDACTED,
    ROLE_ARN_PLACEHOLDER,
    STATE_DIR,
    SUBSYSTEM,
    TRUST_ANCHOR_PLACEHOLDER,
    AuditTarget,
    audit_problems,
    audit_target,
    compile_audit,
    source_globs,
    validate_audit,
)
from components.render.audit.ecs import (
    CREDENTIAL_HEADERS,
    EXTRA_RENAMES,
    MASK_PATTERNS,
    SPIRE_ACTIONS,
    doc,
    log_statements,
    ottl_str,
    raw,
)
from components.render.audit.iam import (
    collector_policy,
    collector_role_name,
    collector_spiffe_id,
    collector_trust_policy,
    irsa_trust_policy,
    pod_identity_trust_policy,
)
from components.render.audit.objects import (
    audit_objects,
    cluster_spiffe_id,
    collector_configmap,
    daemonset,
)
from components.render.yamlout import dump_json, dump_yaml
from components.shard import stack_scope

# --------------------------------------------------------------------------- queries and artifacts


def athena_table(platform: Platform, bucket: str) -> str:
    """An Athena table over the stack's objects (partition projection by dataset and day)."""
    a = platform.config.audit
    location = f"s3://{bucket}/{a.prefix}/{platform.stack}/"
    name = re.sub(r"[^a-z0-9_]", "_", f"agentpassport_audit_{platform.stack}")
    datasets = ",".join(DATASETS.values())
    return f"""-- Agent Passport audit trail of stack {platform.stack} (docs/audit.md). Generated; do not edit.
CREATE EXTERNAL TABLE IF NOT EXISTS {name} (
  `@timestamp` string,
  spiffe_id string,
  trace struct<id:string>,
  span struct<id:string>,
  event struct<dataset:string, action:string, outcome:string, reason:string, kind:string, original:string>,
  message string,
  url struct<path:string, original:string>,
  http struct<request:struct<method:string, id:string>, response:struct<status_code:string>>,
  source struct<ip:string>,
  `user` struct<name:string>,
  agentpassport struct<agent:string, destination:struct<spiffe_id:string>,
    vault:struct<role:string, operation:string, entity_id:string, lease_id:string, request_id:string>,
    database:struct<`user`:string>, opa:struct<allowed:boolean>,
    spire:struct<entry_id:string, agent_id:string, caller_id:string, method:string, status:string>,
    mesh:struct<client_id:string, server:string, route:string>>
)
PARTITIONED BY (dataset string, year string, month string, day string, hour string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION '{location}'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dataset.type' = 'enum',
  'projection.dataset.values' = '{datasets}',
  'projection.year.type' = 'integer', 'projection.year.range' = '2024,2100',
  'projection.month.type' = 'integer', 'projection.month.range' = '1,12', 'projection.month.digits' = '2',
  'projection.day.type' = 'integer', 'projection.day.range' = '1,31', 'projection.day.digits' = '2',
  'projection.hour.type' = 'integer', 'projection.hour.range' = '0,23', 'projection.hour.digits' = '2',
  'storage.location.template' = '{location}${{dataset}}/year=${{year}}/month=${{month}}/day=${{day}}/hour=${{hour}}/'
);
"""


def audit_artifacts(platform: Platform) -> Iterable[Artifact]:
    """``kubernetes/audit/*.yaml``, ``audit/collector.yaml`` and IAM documents, ``audit/athena.sql``."""
    cfg = platform.config
    if not cfg.subsystems.audit or stack_scope(cfg) == "agents":
        return []
    target = compile_audit(platform)
    out = kubernetes_artifacts(SUBSYSTEM, audit_objects(platform, target))
    out.append(Artifact("audit/collector.yaml", dump_yaml(collector_config(platform, target))))
    policy = collector_policy(target.bucket, cfg.audit.prefix, platform.stack, target.kms_key_arn, target.region)
    out.append(Artifact("audit/collector-policy.json", dump_json(policy)))
    out.append(Artifact("audit/collector-trust-policy.json",
                        dump_json(collector_trust_policy(cfg, target.trust_anchor_arn or TRUST_ANCHOR_PLACEHOLDER))))
    out.append(Artifact("audit/athena.sql", athena_table(platform, target.bucket)))
    return out


__all__ = [
    "BUCKET_PLACEHOLDER",
    "COLLECTOR",
    "CONFIG_DIR",
    "CREDENTIAL_HEADERS",
    "DATASETS",
    "DATASET_ATTR",
    "EXTRA_RENAMES",
    "KEEP_LINES",
    "KMS_KEY_PLACEHOLDER",
    "MASKED",
    "MASK_PATTERNS",
    "NODE_ENV",
    "PROFILE_ARN_PLACEHOLDER",
    "PSEUDONYM_ENV",
    "REDACTED",
    "ROLE_ARN_PLACEHOLDER",
    "SPIRE_ACTIONS",
    "STATE_DIR",
    "SUBSYSTEM",
    "TRUST_ANCHOR_PLACEHOLDER",
    "AuditTarget",
    "athena_table",
    "audit_artifacts",
    "audit_objects",
    "audit_problems",
    "audit_target",
    "aws_shared_config",
    "cluster_spiffe_id",
    "collector_config",
    "collector_configmap",
    "collector_policy",
    "collector_role_name",
    "collector_spiffe_id",
    "collector_trust_policy",
    "compile_audit",
    "daemonset",
    "doc",
    "irsa_trust_policy",
    "log_statements",
    "ottl_str",
    "pod_identity_trust_policy",
    "raw",
    "source_globs",
    "spiffe_helper_config",
    "validate_audit",
]
