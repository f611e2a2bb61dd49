"""The cluster id: the uid of the agent's leader-election Lease in the child (as Clusternet).

The Lease ``<agent-namespace>/clusternet-agent`` exists as long as the agent is installed, so
its uid is a stable id that needs no storage of its own. A Lease annotated
``legacy-cluster-id`` (clusters registered before Clusternet v0.15 used another Lease) keeps
that id instead. Deleting the Lease, or the namespace, gives the cluster a new id and so a new
registration.
"""

from __future__ import annotations

import logging
import uuid

from clusternet_aa.apis import labels
from clusternet_aa.kube import errors
from clusternet_aa.kube.client import KubeClient, resource_path

logger = logging.getLogger(__name__)


class ClusterIdError(errors.KubeError):
    """The Lease carries an id that is not a UUID."""


def lease_path(namespace: str, name: str = "") -> str:
    return resource_path("coordination.k8s.io", "v1", "leases", namespace=namespace, name=name)


def cluster_id_of(lease: dict[str, object]) -> str:
    """The cluster id a Lease stands for: its ``legacy-cluster-id`` annotation, else its uid."""
    metadata = lease.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    annotations = metadata.get("annotations") or {}
    legacy = annotations.get(labels.LEGACY_CLUSTER_ID_ANNOTATION) if annotations else None
    value = str(legacy or metadata.get("uid") or "")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ClusterIdError(
            f"Lease {metadata.get('namespace')}/{metadata.get('name')}: cluster id {value!r} "
            "is not a UUID"
        ) from None


async def resolve_cluster_id(kube: KubeClient, namespace: str, name: str) -> str:
    """The cluster id; creates the Lease (without holder) when leader election is off."""
    try:
        lease = await kube.request("GET", lease_path(namespace, name))
    except errors.APINotFound:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {},
        }
        try:
            lease = await kube.request("POST", lease_path(namespace), body=body)
            logger.info("created Lease %s/%s to hold the cluster id", namespace, name)
        except errors.APIConflict:
            lease = await kube.request("GET", lease_path(namespace, name))
    return cluster_id_of(lease)
