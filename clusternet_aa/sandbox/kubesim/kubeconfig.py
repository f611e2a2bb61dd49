"""Kubeconfig documents for a kubesim instance, as kubectl and kubernetes_asyncio read them.

Credentials are embedded (``*-data`` fields), so one file is all a client needs and nothing
points into a temporary directory that may be gone by the time a subprocess reads it.
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from clusternet_aa.sandbox.kubesim.pki import KeyPair
from clusternet_aa.sandbox.kubesim.types import Obj


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def build(
    *,
    server: str,
    ca_pem: bytes,
    cluster: str = "kubesim",
    user: str = "admin",
    token: str | None = None,
    client: KeyPair | None = None,
    namespace: str = "default",
) -> Obj:
    """A kubeconfig with one cluster, one user (token and/or client cert) and one context."""
    credentials: Obj = {}
    if token is not None:
        credentials["token"] = token
    if client is not None:
        credentials["client-certificate-data"] = _b64(client.cert_pem)
        credentials["client-key-data"] = _b64(client.key_pem)
    context = f"{user}@{cluster}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": cluster, "user": user, "namespace": namespace},
            }
        ],
        "current-context": context,
    }


def dump(config: Obj) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def write(path: Path, config: Obj) -> Path:
    """Write ``config`` with mode 0600 (it holds credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump(config))
    path.chmod(0o600)
    return path
