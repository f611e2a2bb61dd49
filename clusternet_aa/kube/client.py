"""A JSON client for an API server, built on ``kubernetes_asyncio``'s configuration and transport.

Why not the generated typed APIs: the hub and the controllers talk to arbitrary resources
(CRDs that may not exist yet, reviews, watches with bookmarks) and want plain JSON dicts and the
project's error tree. ``kubernetes_asyncio`` still does what it is good at: reading kubeconfigs
and in-cluster config (tokens that rotate, client certificates, CA bundles) and pooling
connections. Every call goes through :meth:`KubeClient.request` or :meth:`KubeClient.stream`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config import kube_config

from clusternet_aa.kube import errors

Query = Mapping[str, str] | Sequence[tuple[str, str]]
JsonObj = dict[str, Any]

#: Default budget of one non-streaming request, in seconds.
DEFAULT_TIMEOUT = 30.0


def _forget_vanished_temp_files() -> None:
    """Drop ``kube_config``'s cached temp-file names whose files are gone.

    The loader writes inline certificate data to temp files and caches the names by content,
    process-wide, for ever. If anything loaded the same data earlier with a ``temp_file_path``
    that was deleted since (a temporary directory), the cache hands out a missing file and the
    load fails with "File does not exists".
    """
    cache = getattr(kube_config, "_temp_files", None)
    if isinstance(cache, dict):
        for content, name in list(cache.items()):
            if not os.path.exists(name):
                del cache[content]


async def load_configuration(kubeconfig: Path | None = None) -> k8s_client.Configuration:
    """Client configuration from a kubeconfig file, or in-cluster when ``kubeconfig`` is None."""
    configuration = k8s_client.Configuration()
    _forget_vanished_temp_files()
    with errors.map_api_exceptions():
        try:
            if kubeconfig is None:
                k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                await k8s_config.load_kube_config(
                    config_file=str(kubeconfig), client_configuration=configuration
                )
        except k8s_config.ConfigException as exc:
            raise errors.KubeError(f"cannot load client configuration: {exc}") from exc
    return configuration


class KubeClient:
    """JSON requests and watch streams against one API server; close it when done."""

    def __init__(self, api: k8s_client.ApiClient) -> None:
        self.api = api

    @classmethod
    async def from_kubeconfig(cls, kubeconfig: Path | None = None) -> KubeClient:
        """A client for the cluster in ``kubeconfig`` (in-cluster config when None)."""
        configuration = await load_configuration(kubeconfig)
        return cls(k8s_client.ApiClient(configuration))

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    async def close(self) -> None:
        await self.api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Query | None,
        body: Any,
        client_timeout: aiohttp.ClientTimeout,
        content_type: str,
    ) -> aiohttp.ClientResponse:
        params = list(query.items()) if isinstance(query, Mapping) else list(query or ())
        headers = {"Accept": "application/json", "Content-Type": content_type}
        with errors.map_api_exceptions():
            response: aiohttp.ClientResponse = await self.api.call_api(
                path,
                method,
                query_params=params or None,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=client_timeout,
            )
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: Any = None,
        request_timeout: float = DEFAULT_TIMEOUT,
        content_type: str = "application/json",
    ) -> JsonObj:
        """One request; the decoded JSON object on 2xx, an :class:`errors.APIError` otherwise."""
        response = await self._send(
            method,
            path,
            query=query,
            body=body,
            client_timeout=aiohttp.ClientTimeout(total=request_timeout),
            content_type=content_type,
        )
        with errors.map_api_exceptions():
            async with response:
                data = await response.read()
        if not 200 <= response.status < 300:
            raise errors.from_response(response.status, data)
        try:
            decoded = json.loads(data) if data else {}
        except ValueError as exc:
            raise errors.APITransportError(f"{method} {path}: response is not JSON") from exc
        if not isinstance(decoded, dict):
            raise errors.APITransportError(f"{method} {path}: response is not a JSON object")
        return decoded

    async def stream(
        self, path: str, *, query: Query | None = None, idle_timeout: float | None = None
    ) -> AsyncIterator[JsonObj]:
        """A GET whose answer is newline-delimited JSON (a watch): one object per line.

        ``idle_timeout`` bounds the silence between two lines (a dead connection is noticed);
        the stream itself may last forever.
        """
        response = await self._send(
            "GET",
            path,
            query=query,
            body=None,
            client_timeout=aiohttp.ClientTimeout(total=None, sock_read=idle_timeout),
            content_type="application/json",
        )
        with errors.map_api_exceptions():
            async with response:
                if not 200 <= response.status < 300:
                    raise errors.from_response(response.status, await response.read())
                async for line in response.content:
                    if not line.strip():
                        continue
                    try:
                        decoded = json.loads(line)
                    except ValueError as exc:
                        raise errors.APITransportError(f"GET {path}: bad stream line") from exc
                    if isinstance(decoded, dict):
                        yield decoded


@contextlib.asynccontextmanager
async def open_client(kubeconfig: Path | None = None) -> AsyncIterator[KubeClient]:
    """``async with open_client(path) as kube:`` closes the connection pool afterwards."""
    kube = await KubeClient.from_kubeconfig(kubeconfig)
    try:
        yield kube
    finally:
        await kube.close()


def resource_path(
    group: str, version: str, plural: str, *, namespace: str | None = None, name: str = ""
) -> str:
    """The REST path of a collection or object (``/api/v1/...`` for the core group)."""
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if namespace:
        prefix += f"/namespaces/{namespace}"
    path = f"{prefix}/{plural}"
    return f"{path}/{name}" if name else path
