"""Explicit providers for one stack, handed to the root component.

Children inherit them through the parent chain, so components only ever pass
``parent=self``. Kubernetes objects are either rendered to a directory (no cluster needed)
or applied to the configured cluster; Vault is reached at the configured address with the
operator's own short-lived token from the environment (``VAULT_TOKEN``), never a token in
stack config; AWS likewise takes the operator's session and only the region from config.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_vault as vault

from components.config import StackConfig


def stack_providers(cfg: StackConfig) -> list[pulumi.ProviderResource]:
    providers: list[pulumi.ProviderResource] = []
    kube = cfg.kubernetes
    if kube.mode == "render":
        providers.append(k8s.Provider("k8s-render", render_yaml_to_directory=kube.render_dir))
    else:
        providers.append(k8s.Provider("k8s", kubeconfig=kube.kubeconfig, context=kube.context))
    if cfg.subsystems.vault:
        providers.append(vault.Provider("vault", address=cfg.vault.address, skip_child_token=True))
    if cfg.subsystems.aws or cfg.trust.upstream == "aws-pca":
        # Credentials come from the operator's environment (SSO / role session), never config.
        providers.append(aws.Provider("aws", region=cfg.aws.region))
    return providers
