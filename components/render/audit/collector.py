"""The collector's configuration (``config.yaml``), and the credential helpers' files."""

from __future__ import annotations

import re
from typing import Any

from components.config import StackConfig
from components.platform_model import Platform
from components.render.audit.common import (
    DATASET_ATTR,
    DATASETS,
    KEEP_LINES,
    NODE_ENV,
    S3_PARTITION,
    STATE_DIR,
    SVID_DIR,
    WORKLOAD_API_DIR,
    AuditTarget,
    source_globs,
)
from components.render.audit.ecs import log_statements


def _escape_dollars(text: str) -> str:
    """The collector expands ``${...}`` in its config; ``$$`` is a literal ``$``."""
    return re.sub(r"\$(?!\{env:)", "$$", text)



# --------------------------------------------------------------------------- collector config


def collector_config(platform: Platform, target: AuditTarget, *, endpoint: str | None = None,
                     state_dir: str = STATE_DIR, telemetry_host: str = "0.0.0.0",  # noqa: S104 (pod network)
                     telemetry_port: int = 8888) -> dict[str, Any]:
    """The collector's configuration (``config.yaml``). ``endpoint`` overrides ``audit.endpoint``
    (tests point it at an S3 on 127.0.0.1); nothing here is a credential."""
    cfg = platform.config
    a = cfg.audit
    globs = source_globs(platform)
    receivers: dict[str, Any] = {}
    for source, include in globs.items():
        operators: list[dict[str, Any]] = [{"type": "container", "id": "container"}]
        keep = KEEP_LINES[source]
        if keep is not None:
            operators.append({"type": "filter", "id": "audit-lines-only",
                              "expr": f"not (body matches {_expr_str(keep)})"})
        receivers[f"file_log/{source}"] = {
            "include": include,
            "start_at": "beginning",
            "include_file_path": True,  # the container operator reads namespace, pod and container from it
            "storage": "file_storage",
            "operators": operators,
            "resource": {DATASET_ATTR: DATASETS[source], "host.name": f"${{env:{NODE_ENV}}}"},
        }
    endpoint = endpoint or a.endpoint
    uploader: dict[str, Any] = {
        "region": target.region,
        "s3_bucket": target.bucket,
        "s3_base_prefix": f"{a.prefix}/{platform.stack}",
        "s3_prefix": "other",
        "s3_partition_format": S3_PARTITION,
        "s3_partition_timezone": "UTC",
        "file_prefix": f"${{env:{NODE_ENV}}}_",
        "unique_key_func_name": "uuidv7",
        "compression": "gzip",
        "retry_mode": "standard",
        "retry_max_attempts": 10,
    }
    if endpoint is not None:
        uploader |= {"endpoint": endpoint, "s3_force_path_style": True}
    statements = [_escape_dollars(st) for st in log_statements(platform)]
    return {
        "extensions": {"file_storage": {"directory": state_dir, "create_directory": True}},
        "receivers": receivers,
        "processors": {
            "transform/ecs": {"error_mode": "ignore", "log_statements": [{"context": "log", "statements": statements}]},
            "batch": {"timeout": a.batch_timeout, "send_batch_size": 5000, "send_batch_max_size": 10000},
        },
        "exporters": {
            "awss3/worm": {
                "s3uploader": uploader,
                "marshaler": "body",
                "resource_attrs_to_s3": {"s3_prefix": DATASET_ATTR},
                # never give up on a batch: audit lines wait on the node's disk until S3 takes them
                "retry_on_failure": {"enabled": True, "max_elapsed_time": "0s"},
                "sending_queue": {"enabled": True, "storage": "file_storage"},
            },
        },
        "service": {
            "extensions": ["file_storage"],
            "pipelines": {"logs": {"receivers": sorted(receivers), "processors": ["transform/ecs", "batch"],
                                   "exporters": ["awss3/worm"]}},
            "telemetry": {
                "logs": {"level": "info", "encoding": "json"},
                "metrics": {"level": "basic", "readers": [{"pull": {"exporter": {"prometheus": {
                    "host": telemetry_host, "port": telemetry_port}}}}]},
            },
        },
    }


def _expr_str(text: str) -> str:
    """An expr-lang string literal (the stanza filter operator's language)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def aws_shared_config(target: AuditTarget, cfg: StackConfig) -> str:
    """``AWS_CONFIG_FILE`` for roles-anywhere: the SDK runs aws_signing_helper as credential_process
    on each refresh, with the SVID files spiffe-helper keeps current. No key is in it."""
    helper = cfg.audit.signing_helper_path
    return (
        "[default]\n"
        f"region = {target.region}\n"
        f"credential_process = {helper} credential-process"
        f" --certificate {SVID_DIR}/svid.pem --private-key {SVID_DIR}/svid_key.pem"
        f" --trust-anchor-arn {target.trust_anchor_arn} --profile-arn {target.profile_arn}"
        f" --role-arn {target.role_arn}\n"
    )


def spiffe_helper_config() -> str:
    return (
        f'agent_address = "{WORKLOAD_API_DIR}/spire-agent.sock"\n'
        f'cert_dir = "{SVID_DIR}"\n'
        'svid_file_name = "svid.pem"\n'
        'svid_key_file_name = "svid_key.pem"\n'
        'svid_bundle_file_name = "bundle.pem"\n'
        "daemon_mode = true\n"
    )
