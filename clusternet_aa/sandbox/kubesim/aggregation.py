"""API aggregation: APIService availability, merged discovery, and routing to extension servers.

kube-apiserver's outermost layer is kube-aggregator. After authentication, impersonation and
authorization it decides per group-version whether kubesim answers (Local APIServices) or an
extension server does (``spec.service``); it keeps every APIService's ``Available`` condition
current with a discovery probe, merges the extension servers' groups into ``/apis``, and
publishes in ``kube-system/extension-apiserver-authentication`` how extension servers can tell
the front proxy's requests apart. The hub is such an extension server, so every one of these
behaviours is something it relies on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from clusternet_aa.sandbox.kubesim import apiservices, discovery, negotiation
from clusternet_aa.sandbox.kubesim.aggregation_proxy import (
    AggregationProxy,
    Target,
    describe_error,
    identity_headers,
    plain_error,
)
from clusternet_aa.sandbox.kubesim.apiservices import APIServiceView, ResolveError
from clusternet_aa.sandbox.kubesim.pki import FRONT_PROXY_CLIENT_NAME
from clusternet_aa.sandbox.kubesim.requestinfo import RequestInfo
from clusternet_aa.sandbox.kubesim.rest import json_response
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, UserInfo

if TYPE_CHECKING:
    from clusternet_aa.sandbox.kubesim.server import KubesimServer

logger = logging.getLogger(__name__)

AUTH_CONFIGMAP = "extension-apiserver-authentication"
AUTH_NAMESPACE = "kube-system"
USERNAME_HEADERS = ("X-Remote-User",)
GROUP_HEADERS = ("X-Remote-Group",)
EXTRA_HEADERS_PREFIX = ("X-Remote-Extra-",)
UID_HEADERS = ("X-Remote-Uid",)
#: How many concurrent discovery GETs one availability check makes (any 2xx passes), as kube.
PROBE_ATTEMPTS = 5
#: The identity of the availability probe (system:masters so any authorizer lets it through).
PROBE_USER = UserInfo(name="system:kube-aggregator", groups=("system:masters",))
#: The core group's APIService. kube's APIService validation only asks for ``<version>.<group>``;
#: kubesim's generic name check wants a DNS subdomain, so this one is written to the store directly.
CORE_APISERVICE = "v1."
_CONFIGMAPS = ("", "configmaps")
_ROLES = ("rbac.authorization.k8s.io", "roles")
_CLUSTER_ROLES = ("rbac.authorization.k8s.io", "clusterroles")


def authentication_configmap_data(
    client_ca_pem: bytes, front_proxy_ca_pem: bytes
) -> dict[str, str]:
    """What kube-apiserver publishes; the header lists are JSON string arrays."""

    def strings(values: tuple[str, ...]) -> str:
        return json.dumps(list(values), separators=(",", ":"))

    return {
        "client-ca-file": client_ca_pem.decode(),
        "requestheader-allowed-names": strings((FRONT_PROXY_CLIENT_NAME,)),
        "requestheader-client-ca-file": front_proxy_ca_pem.decode(),
        "requestheader-extra-headers-prefix": strings(EXTRA_HEADERS_PREFIX),
        "requestheader-group-headers": strings(GROUP_HEADERS),
        "requestheader-uid-headers": strings(UID_HEADERS),
        "requestheader-username-headers": strings(USERNAME_HEADERS),
    }


class Aggregation:
    """The aggregation layer of one kubesim instance."""

    def __init__(self, server: KubesimServer) -> None:
        self.server = server
        self.proxy = AggregationProxy(server.pki.front_proxy_client)
        self.resync_seconds = server.config.apiservice_resync_seconds
        self.probe_timeout = server.config.apiservice_probe_timeout
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        #: The resource list each available remote APIService answered with last.
        self._discovery: dict[str, Obj] = {}
        self._probe_session: aiohttp.ClientSession | None = None
        server.store.add_listener(self._on_event)
        server.controllers.extra.append(self._reconcile_objects)
        server.interceptors.append(self.intercept)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="kubesim-apiservices")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._probe_session is not None:
            await self._probe_session.close()
            self._probe_session = None
        await self.proxy.close()

    @property
    def front_proxy_ca_pem(self) -> bytes:
        return self.server.pki.front_proxy_ca.cert_pem

    def _on_event(self, event: object) -> None:
        resource = getattr(event, "resource", None)
        if resource == apiservices.APISERVICES:
            obj, previous = getattr(event, "object", None), getattr(event, "previous", None)
            # A status write (ours) must not re-trigger a probe, or the loop never rests.
            if previous is not None and obj is not None and obj.get("spec") == previous.get("spec"):
                return
            self._wake.set()
        elif resource in (
            apiservices.SERVICES,
            apiservices.ENDPOINTS,
            apiservices.ENDPOINT_SLICES,
        ):
            self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.resync_seconds):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
            except Exception:
                logger.exception("kubesim: APIService availability check failed")

    # -- objects kube-apiserver keeps: the auth ConfigMap, RBAC, Local APIServices ---------

    def _reconcile_objects(self) -> None:
        self._auth_configmap()
        self._reader_rbac()
        self._local_apiservices()

    def _auth_configmap(self) -> None:
        server = self.server
        info = server.registry.lookup("", "v1", "configmaps")
        assert info is not None
        if server.store.get(("", "namespaces"), "", AUTH_NAMESPACE) is None:
            return
        wanted = authentication_configmap_data(
            server.pki.client_ca.cert_pem, self.front_proxy_ca_pem
        )
        current = server.store.get(_CONFIGMAPS, AUTH_NAMESPACE, AUTH_CONFIGMAP)
        if current is None:
            server.service.create(
                info,
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": AUTH_CONFIGMAP, "namespace": AUTH_NAMESPACE},
                    "data": wanted,
                },
            )
        elif current.get("data") != wanted:
            current["data"] = wanted
            server.service.update(info, current)

    def _reader_rbac(self) -> None:
        """kube's bootstrap Role to read the ConfigMap and ``system:auth-delegator``."""
        server = self.server
        role = server.registry.lookup("rbac.authorization.k8s.io", "v1", "roles")
        cluster_role = server.registry.lookup("rbac.authorization.k8s.io", "v1", "clusterroles")
        assert role is not None
        assert cluster_role is not None
        labels = {"kubernetes.io/bootstrapping": "rbac-defaults"}
        annotations = {"rbac.authorization.kubernetes.io/autoupdate": "true"}
        reader = "extension-apiserver-authentication-reader"
        if server.store.get(_ROLES, AUTH_NAMESPACE, reader) is None and server.store.get(
            ("", "namespaces"), "", AUTH_NAMESPACE
        ):
            server.service.create(
                role,
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {
                        "name": reader,
                        "namespace": AUTH_NAMESPACE,
                        "labels": labels,
                        "annotations": annotations,
                    },
                    "rules": [
                        {
                            "apiGroups": [""],
                            "resources": ["configmaps"],
                            "resourceNames": [AUTH_CONFIGMAP],
                            "verbs": ["get", "list", "watch"],
                        }
                    ],
                },
            )
        if server.store.get(_CLUSTER_ROLES, "", "system:auth-delegator") is None:
            server.service.create(
                cluster_role,
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {
                        "name": "system:auth-delegator",
                        "labels": labels,
                        "annotations": annotations,
                    },
                    "rules": [
                        {
                            "apiGroups": ["authentication.k8s.io"],
                            "resources": ["tokenreviews"],
                            "verbs": ["create"],
                        },
                        {
                            "apiGroups": ["authorization.k8s.io"],
                            "resources": ["subjectaccessreviews"],
                            "verbs": ["create"],
                        },
                    ],
                },
            )

    def _local_apiservices(self) -> None:
        """kube's autoregister and CRD registration controllers: one Local APIService per
        served group-version, marked Available by the local availability controller."""
        server = self.server
        info = server.registry.lookup("apiregistration.k8s.io", "v1", "apiservices")
        assert info is not None
        builtin = {(i.group, i.version) for i in server.registry.builtins()}
        served: dict[str, tuple[str, str, str]] = {}
        for group, versions in server.registry.group_versions().items():
            for version in versions:
                managed = "onstart" if (group, version) in builtin else "true"
                served[apiservices.apiservice_name(group, version)] = (group, version, managed)
        store = server.store
        for name, (group, version, managed) in served.items():
            if store.get(apiservices.APISERVICES, "", name) is None:
                obj = apiservices.local_apiservice(group, version, automanaged=managed)
                if name == CORE_APISERVICE:
                    obj["metadata"]["generation"] = 1
                    store.insert(apiservices.APISERVICES, obj)
                else:
                    server.service.create(info, obj)
        for obj in list(store.iter_refs(apiservices.APISERVICES)):
            meta = obj["metadata"]
            labels = meta.get("labels") or {}
            if (obj.get("spec") or {}).get("service"):
                continue
            if meta["name"] not in served and labels.get(apiservices.AUTOMANAGED_LABEL) == "true":
                with contextlib.suppress(KubesimError):
                    server.service.delete(info, "", meta["name"], {})
                continue
            fresh = store.get(apiservices.APISERVICES, "", meta["name"])
            if fresh is None:
                continue
            changed = apiservices.with_condition(
                fresh, apiservices.available_condition(*apiservices.LOCAL_CONDITION)
            )
            if changed is None:
                continue
            if meta["name"] == CORE_APISERVICE:
                store.replace(apiservices.APISERVICES, changed)
            else:
                server.service.update(info, changed, subresource="status")

    # -- availability --------------------------------------------------------------------

    async def sync(self) -> None:
        """Check every remote APIService now and write its ``Available`` condition."""
        async with self._lock:
            views = [v for v in apiservices.all_views(self.server.store) if not v.local]
            known = {v.name for v in views}
            for name in list(self._discovery):
                if name not in known:
                    del self._discovery[name]
            results = await asyncio.gather(*(self._check(v) for v in views))
            info = self.server.registry.lookup("apiregistration.k8s.io", "v1", "apiservices")
            assert info is not None
            for item, condition in zip(views, results, strict=True):
                fresh = self.server.store.get(apiservices.APISERVICES, "", item.name)
                if fresh is None or apiservices.view(fresh).service != item.service:
                    continue
                changed = apiservices.with_condition(fresh, condition)
                if changed is not None:
                    with contextlib.suppress(KubesimError):
                        self.server.service.update(info, changed, subresource="status")

    async def _check(self, item: APIServiceView) -> Obj:
        assert item.service is not None
        try:
            candidates = apiservices.addresses(self.server.store, item.service)
        except ResolveError as e:
            self._discovery.pop(item.name, None)
            return apiservices.available_condition("False", e.reason, e.message)
        path = "/api/v1" if item.name == "v1." else f"/apis/{item.group}/{item.version}"
        attempts = [
            self._probe(candidates[n % len(candidates)], path) for n in range(PROBE_ATTEMPTS)
        ]
        errors = await asyncio.gather(*attempts)
        failures = [e for e in errors if e is not None]
        if len(failures) == len(errors):
            self._discovery.pop(item.name, None)
            return apiservices.available_condition("False", "FailedDiscoveryCheck", failures[-1])
        await self._fetch_discovery(item, path)
        return apiservices.available_condition(*apiservices.PASSED_CONDITION)

    def _probe_client(self) -> aiohttp.ClientSession:
        """The probe skips server verification, as kube's does (only the proxy verifies)."""
        if self._probe_session is None or self._probe_session.closed:
            context = self.proxy.ssl_context(None, True)
            self._probe_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context, force_close=True)
            )
        return self._probe_session

    async def _probe(self, address: tuple[str, int], path: str) -> str | None:
        """One discovery GET; None on 2xx, else kube's error text."""
        host, port = address
        url = f"https://{host}:{port}{path}"
        timeout = aiohttp.ClientTimeout(total=self.probe_timeout)
        try:
            async with self._probe_client().get(
                url,
                headers=identity_headers(PROBE_USER),
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                if not 200 <= response.status < 300:
                    return f"bad status from {url}: {response.status}"
                return None
        except TimeoutError:
            return (
                f'failing or missing response from {url}: Get "{url}": context deadline exceeded '
                "(Client.Timeout exceeded while awaiting headers)"
            )
        except (aiohttp.ClientError, OSError) as e:
            reason = describe_error(e, host, port)
            return f'failing or missing response from {url}: Get "{url}": {reason}'

    async def _fetch_discovery(self, item: APIServiceView, path: str) -> None:
        """The extension server's resource list, through the verifying proxy transport."""
        assert item.service is not None
        try:
            host, port = apiservices.resolve(self.server.store, item.service)
        except ResolveError:
            self._discovery.pop(item.name, None)
            return
        target = self._target(item, host, port)
        try:
            async with self.proxy.session(target).get(
                f"https://{host}:{port}{path}",
                headers=[*identity_headers(PROBE_USER), ("Accept", "application/json")],
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.probe_timeout),
                server_hostname=target.server_name,
            ) as response:
                if response.status != 200:
                    raise ValueError(f"status {response.status}")
                document = json.loads(await response.read())
                if not isinstance(document, dict) or not isinstance(
                    document.get("resources"), list
                ):
                    raise ValueError("not an APIResourceList")
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            logger.debug("kubesim: discovery of %s failed: %s", item.name, e)
            self._discovery.pop(item.name, None)
            return
        self._discovery[item.name] = document

    @staticmethod
    def _target(item: APIServiceView, host: str, port: int) -> Target:
        assert item.service is not None
        return Target(
            host=host,
            port=port,
            server_name=item.service.server_name,
            ca_bundle=item.ca_bundle,
            insecure=item.insecure,
        )

    async def wait_available(self, name: str, status: str = "True", within: float = 10) -> Obj:
        """Test helper: run checks until APIService ``name`` has ``Available=<status>``."""
        deadline = time.monotonic() + within
        while True:
            await self.sync()
            obj = self.server.store.get(apiservices.APISERVICES, "", name)
            conditions = ((obj or {}).get("status") or {}).get("conditions") or ()
            for condition in conditions:
                if condition.get("type") == "Available" and condition.get("status") == status:
                    assert obj is not None
                    return obj
            if time.monotonic() > deadline:
                raise TimeoutError(f"APIService {name} never became Available={status}")
            await asyncio.sleep(0.05)

    # -- routing -------------------------------------------------------------------------

    async def intercept(
        self, request: web.Request, info: RequestInfo, user: UserInfo
    ) -> web.StreamResponse | None:
        """Take the requests the aggregator answers itself or proxies; None for the rest."""
        parts = request.path.strip("/").split("/")
        if parts[0] != "apis":
            return None
        if len(parts) == 1 and request.method in ("GET", "HEAD"):
            return self._apis(request)
        if len(parts) == 2 and request.method in ("GET", "HEAD"):
            return self._group(parts[1])
        if len(parts) < 3:
            return None
        item = apiservices.find(self.server.store, parts[1], parts[2])
        if item is None or item.local:
            return None
        return await self._proxy(request, user, item, discovery=len(parts) == 3)

    async def _proxy(
        self, request: web.Request, user: UserInfo, item: APIServiceView, *, discovery: bool
    ) -> web.StreamResponse:
        if not item.available:
            return plain_error(503, "service unavailable")
        assert item.service is not None
        try:
            host, port = apiservices.resolve(self.server.store, item.service)
        except ResolveError:
            return plain_error(503, "service unavailable")
        target = self._target(item, host, port)
        return await self.proxy.forward(request, user, target, discovery=discovery)

    # -- discovery -----------------------------------------------------------------------

    def _remote_groups(self) -> dict[str, list[APIServiceView]]:
        """Groups with at least one remote APIService; their APIServices, kube-sorted."""
        views = apiservices.all_views(self.server.store)
        remote = {v.group for v in views if not v.local and v.group}
        grouped: dict[str, list[APIServiceView]] = {}
        for item in views:
            if item.group in remote:
                grouped.setdefault(item.group, []).append(item)
        for items in grouped.values():
            items.sort(key=_version_order)
        return grouped

    def _group_priority(self, group: str, remote: dict[str, list[APIServiceView]]) -> int:
        if group in remote:
            return max(v.group_priority for v in remote[group])
        stored = [v for v in apiservices.all_views(self.server.store) if v.group == group]
        if stored:
            return max(v.group_priority for v in stored)
        versions = self.server.registry.group_versions().get(group) or ["v1"]
        return max(apiservices.priority_of(group, v)[0] for v in versions)

    def _ordered(self, groups: list[str], remote: dict[str, list[APIServiceView]]) -> list[str]:
        """kube's ``SortedByGroupAndVersion``: own group first, then by priority, then name."""
        return sorted(
            groups,
            key=lambda g: (
                g != apiservices.AGGREGATOR_GROUP,
                -self._group_priority(g, remote),
                g,
            ),
        )

    def _apis(self, request: web.Request) -> web.StreamResponse:
        remote = self._remote_groups()
        registry = self.server.registry
        if negotiation.wants_aggregated_discovery(request.headers.get("Accept", "")):
            document = discovery.aggregated(registry, legacy=False)
            items: dict[str, Obj] = {i["metadata"]["name"]: i for i in document["items"]}
            for group, members in remote.items():
                remote_item = self._aggregated_group(group, members)
                if remote_item is not None:
                    items[group] = remote_item
                else:
                    items.pop(group, None)
            document["items"] = [items[g] for g in self._ordered(list(items), remote)]
            return json_response(None, document, content_type=negotiation.AGGREGATED_V2)
        listing = discovery.api_group_list(registry)
        groups: dict[str, Obj] = {g["name"]: g for g in listing["groups"]}
        for group, members in remote.items():
            groups[group] = _api_group(group, members)
        listing["groups"] = [groups[g] for g in self._ordered(list(groups), remote)]
        return json_response(None, listing)

    def _group(self, group: str) -> web.StreamResponse | None:
        members = self._remote_groups().get(group)
        if not members:
            return None
        return json_response(
            None, {"kind": "APIGroup", "apiVersion": "v1", **_api_group(group, members)}
        )

    def _aggregated_group(self, group: str, members: list[APIServiceView]) -> Obj | None:
        versions: list[Obj] = []
        for item in members:
            if item.local:
                resources = self.server.registry.resources_of(group, item.version)
                if resources:
                    local = discovery.aggregated(self.server.registry, legacy=False)
                    for local_group in local["items"]:
                        if local_group["metadata"]["name"] == group:
                            versions.extend(
                                v for v in local_group["versions"] if v["version"] == item.version
                            )
                continue
            # kube's discovery manager lists a version whose discovery failed without resources.
            entry: Obj = {"version": item.version, "freshness": "Current"}
            fetched = self._discovery.get(item.name)
            if fetched is not None:
                entry["resources"] = _to_aggregated(group, item.version, fetched)
            versions.append(entry)
        if not versions:
            return None
        return {"metadata": {"name": group, "creationTimestamp": None}, "versions": versions}


def _version_order(item: APIServiceView) -> tuple[int, tuple[int, int, int, str]]:
    """kube's ``ByVersionPriority``: versionPriority first, then kube-aware version order."""
    return (-item.version_priority, apiservices.kube_version_key(item.version))


def _api_group(group: str, members: list[APIServiceView]) -> Obj:
    """kube's ``convertToDiscoveryAPIGroup``: every APIService, available or not."""
    versions = [{"groupVersion": f"{group}/{m.version}", "version": m.version} for m in members]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


def _to_aggregated(group: str, version: str, document: Obj) -> list[Obj]:
    """An ``APIResourceList`` in the ``apidiscovery.k8s.io/v2`` shape kubectl 1.37 reads."""
    parents: dict[str, Obj] = {}
    subresources: list[tuple[str, str, Obj]] = []
    for resource in document.get("resources") or ():
        if not isinstance(resource, dict):
            continue
        name = str(resource.get("name", ""))
        kind = {
            "group": str(resource.get("group") or group),
            "version": str(resource.get("version") or version),
            "kind": str(resource.get("kind", "")),
        }
        if "/" in name:
            parent, _, sub = name.partition("/")
            subresources.append(
                (
                    parent,
                    sub,
                    {
                        "subresource": sub,
                        "responseKind": kind,
                        "verbs": resource.get("verbs") or [],
                    },
                )
            )
            continue
        entry: Obj = {
            "resource": name,
            "responseKind": kind,
            "scope": "Namespaced" if resource.get("namespaced") else "Cluster",
            "singularResource": str(resource.get("singularName", "")),
            "verbs": list(resource.get("verbs") or []),
        }
        if resource.get("shortNames"):
            entry["shortNames"] = list(resource["shortNames"])
        if resource.get("categories"):
            entry["categories"] = list(resource["categories"])
        parents[name] = entry
    for parent, _, sub_entry in subresources:
        if parent in parents:
            parents[parent].setdefault("subresources", []).append(sub_entry)
    return [parents[n] for n in sorted(parents)]
