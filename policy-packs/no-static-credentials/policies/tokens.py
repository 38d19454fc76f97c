"""The pack's name, the labels it reads, and the resource type tokens (and groups of them) the policies
know.
"""

from __future__ import annotations

PACK_NAME = "no-static-credentials"
# The label keys of components/labels.py: the pack imports nothing from the project (the engine
# runs it without it), so it keeps copies; tests/test_policy_pack.py keeps them equal.
AGENT_LABEL = "agentpassport.dev/agent"
GATEWAY_LABEL = "agentpassport.dev/gateway"
SERVICE_LABEL = "agentpassport.dev/service"
BOM_KEY = "identityBom"


class T:
    """Resource type tokens, named once (checked against the installed provider SDKs)."""

    STACK = "pulumi:pulumi:Stack"
    # AWS
    IAM_ACCESS_KEY = "aws:iam/accessKey:AccessKey"
    IAM_USER = "aws:iam/user:User"
    IAM_LOGIN_PROFILE = "aws:iam/userLoginProfile:UserLoginProfile"
    IAM_ROLE = "aws:iam/role:Role"
    SSM_DOCUMENT = "aws:ssm/document:Document"
    SSM_ASSOCIATION = "aws:ssm/association:Association"
    S3_OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
    PCA = "aws:acmpca/certificateAuthority:CertificateAuthority"
    # Kubernetes built-ins
    K8S_SECRET = "kubernetes:core/v1:Secret"
    K8S_CONFIGMAP = "kubernetes:core/v1:ConfigMap"
    K8S_NAMESPACE = "kubernetes:core/v1:Namespace"
    K8S_SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
    K8S_SERVICE = "kubernetes:core/v1:Service"
    K8S_POD = "kubernetes:core/v1:Pod"
    K8S_DEPLOYMENT = "kubernetes:apps/v1:Deployment"
    K8S_STATEFULSET = "kubernetes:apps/v1:StatefulSet"
    K8S_DAEMONSET = "kubernetes:apps/v1:DaemonSet"
    K8S_JOB = "kubernetes:batch/v1:Job"
    K8S_CRONJOB = "kubernetes:batch/v1:CronJob"
    # Kubernetes custom resources (apiextensions.CustomResource: kubernetes:<group>/<version>:<Kind>)
    CLUSTER_SPIFFE_ID = "kubernetes:spire.spiffe.io/v1alpha1:ClusterSPIFFEID"
    CLUSTER_STATIC_ENTRY = "kubernetes:spire.spiffe.io/v1alpha1:ClusterStaticEntry"
    LINKERD_SERVER = "kubernetes:policy.linkerd.io/v1beta3:Server"
    LINKERD_AUTHZ_POLICY = "kubernetes:policy.linkerd.io/v1alpha1:AuthorizationPolicy"
    LINKERD_MESH_TLS_AUTHN = "kubernetes:policy.linkerd.io/v1alpha1:MeshTLSAuthentication"
    GMSA_CREDSPEC = "kubernetes:windows.k8s.io/v1:GMSACredentialSpec"
    GMSA_CREDSPEC_V1ALPHA1 = "kubernetes:windows.k8s.io/v1alpha1:GMSACredentialSpec"
    # Vault
    VAULT_DB_CONNECTION = "vault:database/secretBackendConnection:SecretBackendConnection"
    VAULT_DB_ROLE = "vault:database/secretBackendRole:SecretBackendRole"
    VAULT_DB_MOUNT = "vault:database/secretsMount:SecretsMount"
    VAULT_MOUNT = "vault:index/mount:Mount"
    VAULT_AUTH_BACKEND = "vault:index/authBackend:AuthBackend"
    VAULT_JWT_AUTH_BACKEND = "vault:jwt/authBackend:AuthBackend"
    VAULT_QUOTA_RATE_LIMIT = "vault:index/quotaRateLimit:QuotaRateLimit"
    VAULT_JWT_ROLE = "vault:jwt/authBackendRole:AuthBackendRole"
    VAULT_CERT_ROLE = "vault:index/certAuthBackendRole:CertAuthBackendRole"
    VAULT_APPROLE_ROLE = "vault:appRole/authBackendRole:AuthBackendRole"
    VAULT_APPROLE_SECRET_ID = "vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId"
    VAULT_TOKEN = "vault:index/token:Token"
    VAULT_TOKEN_ROLE = "vault:tokenauth/authBackendRole:AuthBackendRole"
    VAULT_AWS_SECRET_BACKEND = "vault:aws/secretBackend:SecretBackend"
    VAULT_AWS_AUTH_CLIENT = "vault:aws/authBackendClient:AuthBackendClient"
    VAULT_PKI_ROLE = "vault:pkiSecret/secretBackendRole:SecretBackendRole"
    VAULT_PKI_ROOT_CERT = "vault:pkiSecret/secretBackendRootCert:SecretBackendRootCert"
    VAULT_PKI_INTERMEDIATE_CSR = (
        "vault:pkiSecret/secretBackendIntermediateCertRequest:SecretBackendIntermediateCertRequest"
    )
    VAULT_POLICY = "vault:index/policy:Policy"
    # TLS
    TLS_PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
    TLS_SELF_SIGNED_CERT = "tls:index/selfSignedCert:SelfSignedCert"
    TLS_LOCALLY_SIGNED_CERT = "tls:index/locallySignedCert:LocallySignedCert"


WORKLOADS = frozenset({
    T.K8S_POD, T.K8S_DEPLOYMENT, T.K8S_STATEFULSET, T.K8S_DAEMONSET, T.K8S_JOB, T.K8S_CRONJOB,
})
GMSA_CREDSPECS = frozenset({T.GMSA_CREDSPEC, T.GMSA_CREDSPEC_V1ALPHA1})
REGISTRATIONS = frozenset({T.CLUSTER_SPIFFE_ID, T.CLUSTER_STATIC_ENTRY})
TLS_CERTS = frozenset({T.TLS_SELF_SIGNED_CERT, T.TLS_LOCALLY_SIGNED_CERT})
VAULT_LOGIN_ROLES = frozenset({T.VAULT_JWT_ROLE, T.VAULT_CERT_ROLE})
DB_ENGINE_BLOCKS = (
    "postgresql", "mysql", "mysqlRds", "mysqlAurora", "mysqlLegacy", "mssql", "oracle", "redshift",
    "hana", "mongodb", "mongodbatlas", "snowflake", "redis", "redisElasticache", "elasticsearch",
    "couchbase", "cassandra", "influxdb",
)
DB_MOUNT_LISTS = (
    "postgresqls", "mysqls", "mysqlRds", "mysqlAuroras", "mysqlLegacies", "mssqls", "oracles",
    "redshifts", "hanas", "mongodbs", "mongodbatlas", "snowflakes", "redis", "redisElasticaches",
    "elasticsearches", "couchbases", "cassandras", "influxdbs",
)
