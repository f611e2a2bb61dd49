"""What a fresh cluster already holds: system namespaces, nodes, the default RBAC policy.

kubectl and controllers assume these exist (``kubectl get ns`` lists four namespaces, a Pod
needs its namespace, ``kubectl auth can-i`` needs ``system:basic-user``), so every kubesim
instance starts with them, created through the same code path as client writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clusternet_aa.sandbox.kubesim.rbac import bootstrap_policy
from clusternet_aa.sandbox.kubesim.types import Obj

if TYPE_CHECKING:
    from clusternet_aa.sandbox.kubesim.server import KubesimServer

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _node(name: str, git_version: str, index: int) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
            },
        },
        "spec": {"podCIDR": f"10.244.{index}.0/24", "podCIDRs": [f"10.244.{index}.0/24"]},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": f"10.0.0.{index + 10}"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": git_version,
                "osImage": "kubesim",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "kubesim://0",
                "kernelVersion": "",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }


def seed(server: KubesimServer) -> None:
    """Create the initial objects of ``server`` (idempotent per store)."""
    registry, service = server.registry, server.service
    ns_info = registry.lookup("", "v1", "namespaces")
    node_info = registry.lookup("", "v1", "nodes")
    svc_info = registry.lookup("", "v1", "services")
    assert ns_info is not None
    assert node_info is not None
    assert svc_info is not None
    if server.store.get(("", "namespaces"), "", "default") is not None:
        return
    for name in SYSTEM_NAMESPACES:
        service.create(
            ns_info, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
    for obj in bootstrap_policy():
        api_version = str(obj["apiVersion"])
        group, _, version = api_version.rpartition("/")
        info = registry.by_kind(group, version, str(obj["kind"]))
        assert info is not None
        service.create(info, obj)
    for index in range(server.config.nodes):
        service.create(
            node_info, _node(f"kubesim-node-{index + 1}", server.config.git_version, index)
        )
    service.create(
        svc_info,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"},
            },
            "spec": {
                "clusterIP": "10.96.0.1",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
            },
        },
    )
