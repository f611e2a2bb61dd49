"""Running kubesim inside tests: an async context manager and client helpers.

``async with running_kubesim() as sim:`` starts an instance on an ephemeral 127.0.0.1 port and
stops it (closing its watches) afterwards; several may run at once. ``api_client(sim)`` gives a
kubernetes_asyncio client configured from the instance's kubeconfig, exactly as application code
would load one.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from kubernetes_asyncio import client, config

from clusternet_aa.sandbox.kubesim.pki import KeyPair
from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer


@contextlib.asynccontextmanager
async def running_kubesim(
    config: KubesimConfig | None = None, *, state_dir: Path | None = None
) -> AsyncIterator[KubesimServer]:
    """A started instance; with ``state_dir`` it writes its kubeconfig and CA files there."""
    config = config or KubesimConfig()
    if state_dir is not None:
        config = replace(config, state_dir=state_dir)
    server = KubesimServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def api_client(
    server: KubesimServer, *, token: str | None = None, client_cert: KeyPair | None = None
) -> AsyncIterator[client.ApiClient]:
    """A kubernetes_asyncio ApiClient for ``server`` (admin unless a credential is given)."""
    configuration = client.Configuration()
    document = server.kubeconfig(token=token, client=client_cert)
    with tempfile.TemporaryDirectory() as tmp:
        loader = config.kube_config.KubeConfigLoader(
            config_dict=document, config_base_path=tmp, temp_file_path=tmp
        )
        await loader.load_and_set(configuration)
        async with client.ApiClient(configuration) as api:
            yield api
