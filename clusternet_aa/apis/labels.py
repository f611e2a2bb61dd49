"""Clusternet's well-known label, annotation, finalizer and taint names, and their values.

These strings are the compatibility contract: objects created by this implementation must be
found by Clusternet's own components and the other way round.
"""

from __future__ import annotations

from typing import Final

# --- groups and namespaces --------------------------------------------------------------------

CLUSTERS_GROUP: Final = "clusters.clusternet.io"
APPS_GROUP: Final = "apps.clusternet.io"
PROXIES_GROUP: Final = "proxies.clusternet.io"
SHADOW_GROUP: Final = "shadow"

SYSTEM_NAMESPACE: Final = "clusternet-system"
RESERVED_NAMESPACE: Final = "clusternet-reserved"
MCS_NAMESPACE: Final = "clusternet-mcs"
#: Dedicated namespaces are created with this generateName.
DEDICATED_NAMESPACE_PREFIX: Final = "clusternet-"

# --- cluster labels ---------------------------------------------------------------------------

CLUSTER_ID_LABEL: Final = "clusters.clusternet.io/cluster-id"
CLUSTER_NAME_LABEL: Final = "clusters.clusternet.io/cluster-name"
REGISTERED_BY_LABEL: Final = "clusters.clusternet.io/registered-by"
CLUSTER_BOOTSTRAPPING_LABEL: Final = "clusters.clusternet.io/bootstrapping"
#: Values of :data:`CLUSTER_BOOTSTRAPPING_LABEL`.
CREDENTIALS_AUTO: Final = "credentials-auto"
RBAC_DEFAULTS: Final = "rbac-defaults"

#: Prefix of node labels that the agent aggregates onto its ManagedCluster.
NODE_LABELS_PREFIX: Final = "node.clusternet.io/"

# --- ownership --------------------------------------------------------------------------------

OBJECT_CREATED_BY_LABEL: Final = "clusternet.io/created-by"
#: Values of :data:`OBJECT_CREATED_BY_LABEL` and :data:`REGISTERED_BY_LABEL`.
CLUSTERNET_AGENT: Final = "clusternet-agent"
CLUSTERNET_HUB: Final = "clusternet-hub"
CLUSTERNET_CONTROLLER_MANAGER: Final = "clusternet-controller-manager"
CLUSTERNET_SCHEDULER: Final = "clusternet-scheduler"

#: ``"true"`` lets reconcilers overwrite the object.
AUTO_UPDATE_ANNOTATION: Final = "clusternet.io/autoupdate"

# --- provenance (apps) ------------------------------------------------------------------------

CONFIG_GROUP_LABEL: Final = "apps.clusternet.io/config.group"
CONFIG_VERSION_LABEL: Final = "apps.clusternet.io/config.version"
CONFIG_KIND_LABEL: Final = "apps.clusternet.io/config.kind"
CONFIG_NAME_LABEL: Final = "apps.clusternet.io/config.name"
CONFIG_NAMESPACE_LABEL: Final = "apps.clusternet.io/config.namespace"
CONFIG_UID_LABEL: Final = "apps.clusternet.io/config.uid"

CONFIG_SUBSCRIPTION_UID_LABEL: Final = "apps.clusternet.io/subs.uid"
CONFIG_SUBSCRIPTION_NAME_LABEL: Final = "apps.clusternet.io/subs.name"
CONFIG_SUBSCRIPTION_NAMESPACE_LABEL: Final = "apps.clusternet.io/subs.namespace"

# --- annotations ------------------------------------------------------------------------------

#: ``<descNamespace>.<descName>`` on every object applied into a child cluster.
OWNED_BY_DESCRIPTION_ANNOTATION: Final = "apps.clusternet.io/owned-by-description"
LAST_APPLIED_CONFIG_ANNOTATION: Final = "clusternet.io/last-applied-configuration"
#: ``"true"``: a shadow create skips the dry-run validation.
SKIP_VALIDATING_ANNOTATION: Final = "apps.clusternet.io/skip-validating"
#: Message explaining why a feed deletion is blocked.
FEED_PROTECTION_ANNOTATION: Final = "apps.clusternet.io/feed-protection"
IS_DEFAULT_CLUSTER_INIT_ANNOTATION: Final = "apps.clusternet.io/is-default-cluster-init"
CLUSTER_INIT_BASE_ANNOTATION: Final = "apps.clusternet.io/cluster-init-base"
CLUSTER_INIT_SKIP_ANNOTATION: Final = "clusters.clusternet.io/skip-cluster-init"
#: On the agent's leader-election Lease: a cluster id kept from before v0.15 (wins over uid).
LEGACY_CLUSTER_ID_ANNOTATION: Final = "legacy-cluster-id"

# --- finalizers -------------------------------------------------------------------------------

APPS_FINALIZER: Final = "apps.clusternet.io/finalizer"
FEED_PROTECTION_FINALIZER: Final = "apps.clusternet.io/feed-protection"

# --- taints -----------------------------------------------------------------------------------

TAINT_CLUSTER_UNSCHEDULABLE: Final = "clusters.clusternet.io/unschedulable"
TAINT_CLUSTER_INITIALIZATION: Final = "clusters.clusternet.io/initialization"
#: Value of the initialization taint the approver puts on a new cluster (gate ClusterInit).
CLUSTER_INIT_WAITING: Final = "ClusterInitWaiting"
TAINT_EFFECT_NO_SCHEDULE: Final = "NoSchedule"

# --- secrets and names ------------------------------------------------------------------------

#: Child-side Secret (agent namespace) holding the credentials of the parent.
PARENT_CLUSTER_SECRET: Final = "parent-cluster"
#: Parent-side Secret (dedicated namespace) holding the credentials of the child.
CHILD_CLUSTER_DEPLOYER_SECRET: Final = "child-cluster-deployer"
#: Child-side ServiceAccount whose token the agent hands to the parent.
APP_DEPLOYER_SERVICE_ACCOUNT: Final = "clusternet-app-deployer"
#: Role and RoleBinding of the cluster in its dedicated namespace.
MANAGED_CLUSTER_ROLE: Final = "clusternet-managedcluster-role"

#: Data keys of the ``parent-cluster`` and ``child-cluster-deployer`` Secrets.
SECRET_TOKEN_KEY: Final = "token"
SECRET_CA_KEY: Final = "ca.crt"
SECRET_NAMESPACE_KEY: Final = "namespace"
SECRET_APISERVER_URL_KEY: Final = "apiserver-advertise-url"
SECRET_SERVICE_ACCOUNT_NAME_KEY: Final = "service-account.name"
SECRET_SERVICE_ACCOUNT_UID_KEY: Final = "service-account.uid"


def registration_name(cluster_id: str) -> str:
    """Name of a cluster's ClusterRegistrationRequest, ClusterRole and ClusterRoleBinding."""
    return f"clusternet-{cluster_id}"
