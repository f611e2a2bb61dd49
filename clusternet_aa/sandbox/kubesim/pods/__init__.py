"""Pods that run: local processes behind pods, and exec, attach, port-forward and logs.

:func:`wire_pods` installs the ``pods/exec``, ``pods/attach``, ``pods/portforward`` and
``pods/log`` handlers on a server and, when its config has a ``pod_runtime``, the controller
that runs pods as local processes. Without a runtime, pods stay Pending and unscheduled, and
these subresources answer as kube-apiserver does for such a pod.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clusternet_aa.sandbox.kubesim.pods.exec import ExecHandlers
from clusternet_aa.sandbox.kubesim.pods.logs import LogHandler
from clusternet_aa.sandbox.kubesim.pods.portforward import PortForwardHandler
from clusternet_aa.sandbox.kubesim.pods.runtime import (
    PORTS_ANNOTATION,
    PodRuntime,
    PodRuntimeConfig,
)

if TYPE_CHECKING:
    from clusternet_aa.sandbox.kubesim.server import KubesimServer

__all__ = ["PORTS_ANNOTATION", "PodRuntime", "PodRuntimeConfig", "wire_pods"]


def wire_pods(server: KubesimServer) -> PodRuntime:
    """Install the pod stream handlers (and the runtime controller); returns the runtime."""
    runtime = PodRuntime(server.service, server.registry, server.config.pod_runtime)
    execs = ExecHandlers(runtime, server.authorizer)
    subresources = server.rest.subresources
    subresources[("", "pods", "exec")] = execs.exec
    subresources[("", "pods", "attach")] = execs.attach
    subresources[("", "pods", "portforward")] = PortForwardHandler(runtime, server.authorizer)
    subresources[("", "pods", "log")] = LogHandler(runtime)
    if runtime.enabled:
        server.controllers.extra.append(runtime.reconcile)
    return runtime
