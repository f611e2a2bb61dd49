"""What kube-apiserver checks before an exec, attach, port-forward or log request reaches a node.

The order is kube-apiserver's: the extra ``create`` authorization of a WebSocket ``GET``
(``AuthorizePodWebsocketUpgradeCreatePermission``, on since 1.35), then the pod (404), the
container (400 unless exactly one or named), the node it is bound to (400 when unscheduled), and
only then the upgrade itself (400 without one). SPDY upgrades are refused with a Status that
says why, since kubesim serves these streams over WebSocket only.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from clusternet_aa.sandbox.kubesim.rest import Call
from clusternet_aa.sandbox.kubesim.types import Decision, KubesimError, Obj, RequestAttributes

WEBSOCKET = "websocket"
SPDY = "spdy"

#: What kubectl needs for each subresource when its WebSocket path is refused.
_NEEDS = {
    "exec": "kubectl 1.30 or newer, without KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false",
    "attach": "kubectl 1.30 or newer, without KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false",
    "portforward": "kubectl 1.31 or newer, without KUBECTL_PORT_FORWARD_WEBSOCKETS=false",
}


def upgrade_kind(request: web.Request) -> str:
    """``websocket``, ``spdy`` or "" for a request without an upgrade."""
    connection = request.headers.get("Connection", "").lower()
    upgrade = request.headers.get("Upgrade", "").lower()
    if "upgrade" not in connection or not upgrade:
        return ""
    if upgrade == "websocket":
        return WEBSOCKET
    if upgrade.startswith("spdy/"):
        return SPDY
    return upgrade


def check_create(call: Call, authorize: Callable[[RequestAttributes], Decision]) -> None:
    """The synthetic ``create`` check kube-apiserver adds for a ``GET`` on a connect resource."""
    if call.info.verb == "create":
        return
    attrs = RequestAttributes(
        user=call.user,
        verb="create",
        is_resource_request=True,
        path=call.info.path,
        api_group=call.info.api_group,
        api_version=call.info.api_version,
        resource=call.info.resource,
        subresource=call.info.subresource,
        namespace=call.info.namespace,
        name=call.info.name,
    )
    decision = authorize(attrs)
    if not decision.allowed:
        raise KubesimError(
            403,
            "Forbidden",
            f'pods "{call.info.name}" is forbidden: {decision.reason}',
            details={"name": call.info.name, "kind": "pods"},
        )


def container_names(pod: Obj) -> list[str]:
    spec = pod.get("spec") or {}
    names: list[str] = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        names.extend(str(c.get("name", "")) for c in spec.get(key) or [] if isinstance(c, dict))
    return names


def choose_container(pod: Obj, requested: str) -> str:
    """kube-apiserver's ``validateContainer``."""
    name = pod["metadata"]["name"]
    containers = [c for c in (pod.get("spec") or {}).get("containers") or [] if isinstance(c, dict)]
    if not requested:
        if len(containers) == 1:
            return str(containers[0].get("name", ""))
        if not containers:
            raise KubesimError(
                400, "BadRequest", f"a container name must be specified for pod {name}"
            )
        raise KubesimError(
            400,
            "BadRequest",
            f"a container name must be specified for pod {name}, choose one of: "
            f"[{' '.join(container_names(pod))}]",
        )
    if requested not in container_names(pod):
        raise KubesimError(400, "BadRequest", f"container {requested} is not valid for pod {name}")
    return requested


def require_node(pod: Obj) -> str:
    node = str((pod.get("spec") or {}).get("nodeName") or "")
    if not node:
        raise KubesimError(
            400, "BadRequest", f"pod {pod['metadata']['name']} does not have a host assigned"
        )
    return node


def require_upgrade(call: Call) -> None:
    """No upgrade: kube's upgrade-aware proxy 400; SPDY: refused with what to use instead."""
    kind = upgrade_kind(call.request)
    if kind == WEBSOCKET:
        return
    if kind == SPDY:
        sub = call.info.subresource
        raise KubesimError(
            400,
            "BadRequest",
            f"kubesim serves pods/{sub} over WebSocket only; this SPDY/3.1 upgrade is not "
            f"supported: use {_NEEDS.get(sub, 'a WebSocket client')}",
        )
    raise KubesimError(400, "BadRequest", "Upgrade request required")


def query_bool(request: web.Request, name: str) -> bool:
    """kube's query conversion to bool: present and neither "0" nor "false"."""
    values = request.query.getall(name, [])
    if not values:
        return False
    return values[0] != "0" and values[0].lower() != "false"
