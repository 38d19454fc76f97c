"""Resource policies on AWS IAM: no access keys, no IAM users or console logins."""

from __future__ import annotations

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .tokens import T
from .values import _cfg, _props, _schema, agent_of, agent_prefix

# no-iam-access-keys ------------------------------------------------------------


def _no_iam_access_keys(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != T.IAM_ACCESS_KEY:
        return
    props = _props(args)
    user = props.get("user")
    who = f" for IAM user {user!r}" if isinstance(user, str) else ""
    report(f"{agent_prefix(agent_of(args.resource_type, args.name, props))}IAM access key "
           f"{args.name!r}{who} is a long-lived static credential", None)


# no-iam-users -----------------------------------------------------------------

NO_IAM_USERS_SCHEMA = _schema(allowedUsers={
    "type": "array", "items": {"type": "string"}, "default": [],
    "description": "IAM user names this pack tolerates (e.g. a break-glass user managed here).",
})


def _no_iam_users(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in (T.IAM_USER, T.IAM_LOGIN_PROFILE):
        return
    props = _props(args)
    cfg = _cfg(args, NO_IAM_USERS_SCHEMA)
    user = props.get("name") if args.resource_type == T.IAM_USER else props.get("user")
    if isinstance(user, str) and user in cfg["allowedUsers"]:
        return
    what = "IAM user" if args.resource_type == T.IAM_USER else "console login profile"
    report(f"{agent_prefix(agent_of(args.resource_type, args.name, props))}{what} {args.name!r} "
           "gives a workload a long-lived identity with passwords or keys", None)
