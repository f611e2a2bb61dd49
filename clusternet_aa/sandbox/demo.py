"""What the sandbox adds to the clusters besides the repo's manifests: its users and the demo pod.

* In each child: ``admin`` is a cluster-admin (the child's own RBAC, not the parent's
  ``system:masters``), ``alice`` may read pods and their logs, exec into them and port-forward
  to them in namespace ``default`` only; and pod ``demo`` runs there.
* In the parent: both may use ``sockets/proxy`` (the manifests' ``clusternet:socket-proxy``).

The demo pod's container is a real local process (kubesim's pod runtime): a small HTTP server on
the local port that containerPort 8080 maps to, answering with its cluster's name, and printing
a log line every second.
"""

from __future__ import annotations

import json
from typing import Any

Obj = dict[str, Any]

ADMIN = "admin"
ALICE = "alice"
DEMO_POD = "demo"
DEMO_NAMESPACE = "default"
DEMO_CONTAINER_PORT = 8080
#: kubesim's pod annotation mapping a containerPort to a real port on 127.0.0.1.
LOCAL_PORTS_ANNOTATION = "kubesim.clusternet.io/local-ports"
SOCKET_PROXY_CLUSTER_ROLE = "clusternet:socket-proxy"

#: The demo container's program (``python3 -u -c``): serve HTTP on $PORT, log every second.
DEMO_SERVER = """\
import http.server, os, threading, time
cluster, port = os.environ["CLUSTER_NAME"], int(os.environ["PORT"])
served = 0
class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global served
        served += 1
        body = f"hello from {cluster} (pod demo, {self.path})\\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, format, *args):
        print(f"{cluster}: {self.command} {self.path}", flush=True)
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Hello)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(f"{cluster}: serving HTTP on containerPort 8080", flush=True)
tick = 0
while True:
    tick += 1
    print(f"{cluster}: tick {tick}, {served} requests served", flush=True)
    time.sleep(1)
"""


def _rbac(kind: str, name: str, namespace: str | None = None) -> Obj:
    metadata: Obj = {"name": name, "labels": {"app.kubernetes.io/part-of": "clusternet-sandbox"}}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata}


def _user(name: str) -> Obj:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}


def parent_objects() -> list[Obj]:
    """Both sandbox users may use every child through the hub (the child decides the rest)."""
    binding = _rbac("ClusterRoleBinding", "sandbox:socket-proxy-users")
    binding["roleRef"] = {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": SOCKET_PROXY_CLUSTER_ROLE,
    }
    binding["subjects"] = [_user(ADMIN), _user(ALICE)]
    return [binding]


def child_objects(cluster: str, local_port: int) -> list[Obj]:
    """The child's RBAC for the sandbox users, and the demo pod."""
    admin = _rbac("ClusterRoleBinding", "sandbox:admin")
    admin["roleRef"] = {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "cluster-admin",
    }
    admin["subjects"] = [_user(ADMIN)]
    developer = _rbac("Role", "sandbox:pod-developer", DEMO_NAMESPACE)
    developer["rules"] = [
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
        # kubectl opens exec and port-forward with a websocket GET, which kube-apiserver
        # authorizes as `get` and, since 1.35, also as `create` (kubesim does the same).
        {
            "apiGroups": [""],
            "resources": ["pods/exec", "pods/portforward"],
            "verbs": ["get", "create"],
        },
    ]
    alice = _rbac("RoleBinding", "sandbox:alice", DEMO_NAMESPACE)
    alice["roleRef"] = {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "sandbox:pod-developer",
    }
    alice["subjects"] = [_user(ALICE)]
    return [admin, developer, alice, demo_pod(cluster, local_port)]


def demo_pod(cluster: str, local_port: int) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": DEMO_POD,
            "namespace": DEMO_NAMESPACE,
            "labels": {"app": "demo"},
            "annotations": {
                LOCAL_PORTS_ANNOTATION: json.dumps({str(DEMO_CONTAINER_PORT): local_port})
            },
        },
        "spec": {
            "containers": [
                {
                    "name": "hello",
                    "image": "python:3.11-slim",
                    "command": ["python3", "-u", "-c", DEMO_SERVER],
                    "env": [
                        {"name": "CLUSTER_NAME", "value": cluster},
                        # kubesim runs the container on the host: the real port 8080 maps to.
                        {"name": "PORT", "value": str(local_port)},
                    ],
                    "ports": [
                        {"name": "http", "containerPort": DEMO_CONTAINER_PORT, "protocol": "TCP"}
                    ],
                }
            ]
        },
    }
