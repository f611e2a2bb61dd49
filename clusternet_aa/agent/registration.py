"""Registration with the parent, exactly as Clusternet's agent does it (reference §2.3).

1. Credentials: the child Secret ``<agent-ns>/parent-cluster`` when it exists and was saved for
   the same parent URL (token, CA, dedicated namespace); otherwise the bootstrap token, with
   TLS not verified (the bootstrap token comes with no CA, as upstream).
2. Create ``ClusterRegistrationRequest`` ``clusternet-<cluster-id>``; AlreadyExists is fine.
3. Poll it until ``status.result`` is Approved (adopting the name the parent labelled it with).
4. Check the approved token against the parent, TLS verified with the approved CA: an
   approval whose ServiceAccount was deleted carries a token the parent rejects, and saving it
   would only fail later.
5. Save the dedicated credentials in ``parent-cluster`` (labels and keys as Clusternet's).

A 401 or 403 while using saved credentials drops them for the bootstrap token. Every other
failure (parent unreachable, bootstrap token without rights, a denied request) is reported
once per cause and retried with backoff; :meth:`Registrar.register` only returns on success.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import secrets
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s_client

from clusternet_aa.agent.problems import Problems, Retry, classify
from clusternet_aa.agent.settings import AgentSettings
from clusternet_aa.apis import labels
from clusternet_aa.apis.clusters import (
    ApprovedResult,
    ClusterRegistrationRequest,
    ClusterRegistrationRequestSpec,
)
from clusternet_aa.apis.meta import ModelError, ObjectMeta
from clusternet_aa.kube import errors
from clusternet_aa.kube.client import JsonObj, KubeClient, resource_path

logger = logging.getLogger(__name__)

TOPIC = "registration"
#: Characters of a generated cluster name suffix (Kubernetes' generateName alphabet).
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
CRR_PLURAL = ClusterRegistrationRequest.PLURAL


class RegistrationDenied(errors.KubeError):
    """The parent answered the request with Denied or Failed."""


class StaleApproval(errors.KubeError):
    """The request is Approved but the parent rejects the token it carries."""


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """How to talk to the parent. No CA means bootstrap: TLS is not verified."""

    parent_url: str
    token: str = ""
    ca_pem: bytes = b""
    #: The cluster's dedicated namespace in the parent (empty before approval).
    namespace: str = ""
    #: The ManagedCluster's name (the cluster name).
    cluster_name: str = ""
    bootstrap: bool = False

    def __repr__(self) -> str:  # never log a token
        return (
            f"Credentials(parent_url={self.parent_url!r}, namespace={self.namespace!r}, "
            f"bootstrap={self.bootstrap})"
        )

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the parent with the approved CA (the system CAs when there is none)."""
        if self.ca_pem:
            return ssl.create_default_context(cadata=self.ca_pem.decode("ascii", "replace"))
        return ssl.create_default_context()


class ParentClients:
    """Builds kube clients for the parent from :class:`Credentials` (CA files in a temp dir)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="clusternet-agent-")

    def close(self) -> None:
        self._dir.cleanup()

    def open(self, credentials: Credentials) -> KubeClient:
        configuration = k8s_client.Configuration()
        configuration.host = credentials.parent_url.rstrip("/")
        if credentials.token:
            configuration.api_key = {"BearerToken": f"Bearer {credentials.token}"}
        if credentials.ca_pem:
            path = Path(self._dir.name, f"ca-{secrets.token_hex(6)}.crt")
            path.write_bytes(credentials.ca_pem)
            configuration.ssl_ca_cert = str(path)
        else:
            configuration.verify_ssl = False
        return KubeClient(k8s_client.ApiClient(configuration))


def generated_name(prefix: str) -> str:
    return f"{prefix}-{''.join(random.choice(_NAME_ALPHABET) for _ in range(5))}"


def secret_path(namespace: str, name: str = "") -> str:
    return resource_path("", "v1", "secrets", namespace=namespace, name=name)


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _secret_data(secret: JsonObj, key: str) -> bytes:
    raw = (secret.get("data") or {}).get(key)
    if not isinstance(raw, str):
        return b""
    try:
        return base64.b64decode(raw)
    except ValueError:
        return b""


class Registrar:
    """Registers one cluster; ``await register()`` returns the dedicated credentials."""

    def __init__(
        self,
        settings: AgentSettings,
        child: KubeClient,
        cluster_id: str,
        parents: ParentClients,
        problems: Problems,
    ) -> None:
        self._settings = settings
        self._child = child
        self.cluster_id = cluster_id
        self._parents = parents
        self._problems = problems
        self.cluster_name = settings.cluster_name or generated_name(settings.cluster_name_prefix)
        #: Set when the saved credentials were rejected; cleared by a successful registration.
        self._bootstrap_only = False
        self._told_url_change = False
        #: Requests created in the parent (for tests and metrics).
        self.requests_created = 0

    @property
    def crr_name(self) -> str:
        return labels.registration_name(self.cluster_id)

    def forget_saved_credentials(self) -> None:
        """The dedicated credentials stopped working: next time, use the bootstrap token."""
        self._bootstrap_only = True

    async def register(self) -> Credentials:
        """Retry until registered; never raises a :class:`errors.KubeError`."""
        retry = Retry(initial=self._settings.registration_retry_period)
        while True:
            try:
                credentials = await self._choose_credentials()
            except errors.KubeError as exc:
                self._problems.report(
                    TOPIC, "child-" + classify(exc), f"cannot read the saved credentials: {exc}"
                )
                await retry.failed()
                continue
            try:
                result = await self._register_with(credentials)
            except (errors.APIUnauthorized, errors.APIForbidden) as exc:
                if not credentials.bootstrap:
                    self._problems.report(
                        TOPIC,
                        "saved-rejected",
                        f"the parent rejects the saved credentials ({exc}); "
                        "registering again with the bootstrap token",
                    )
                    self._bootstrap_only = True
                    continue
                self._problems.report(TOPIC, classify(exc), self._explain(exc))
                await retry.failed()
                continue
            except errors.KubeError as exc:
                self._problems.report(TOPIC, classify(exc), self._explain(exc))
                await retry.failed()
                continue
            self._problems.resolved(TOPIC)
            self._bootstrap_only = False
            return result

    def _explain(self, exc: errors.KubeError) -> str:
        url = self._settings.parent_url
        if isinstance(exc, errors.APIUnauthorized):
            return (
                f"the parent {url} does not accept the bootstrap token ({exc}); "
                "check --cluster-reg-token"
            )
        if isinstance(exc, errors.APIForbidden):
            return (
                f"the bootstrap token may not create or get ClusterRegistrationRequests in "
                f"{url} ({exc}); bind it to ClusterRole clusternet:system:bootstrapping"
            )
        if isinstance(exc, errors.APITransportError):
            return f"the parent {url} is unreachable: {exc}"
        if isinstance(exc, errors.APINotFound):
            return (
                f"the parent {url} does not serve clusterregistrationrequests "
                f"({exc}); are Clusternet's CRDs installed?"
            )
        return str(exc)

    # ------------------------------------------------------------------ credentials

    async def _choose_credentials(self) -> Credentials:
        url = self._settings.parent_url
        bootstrap = Credentials(
            parent_url=url, token=self._settings.bootstrap_token, bootstrap=True
        )
        if self._bootstrap_only:
            return bootstrap
        namespace = self._settings.agent_namespace
        try:
            secret = await self._child.request(
                "GET", secret_path(namespace, labels.PARENT_CLUSTER_SECRET)
            )
        except errors.APINotFound:
            return bootstrap
        saved_url = _secret_data(secret, labels.SECRET_APISERVER_URL_KEY).decode(errors="replace")
        token = _secret_data(secret, labels.SECRET_TOKEN_KEY).decode(errors="replace")
        if saved_url != url:
            if not self._told_url_change:
                logger.info(
                    "the parent URL changed from %s to %s: registering with the bootstrap token",
                    saved_url or "(none)",
                    url,
                )
                self._told_url_change = True
            return bootstrap
        if not token:
            return bootstrap
        name = ((secret.get("metadata") or {}).get("labels") or {}).get(labels.CLUSTER_NAME_LABEL)
        if isinstance(name, str) and name and not self._settings.cluster_name:
            self.cluster_name = name
        return Credentials(
            parent_url=url,
            token=token,
            ca_pem=_secret_data(secret, labels.SECRET_CA_KEY),
            namespace=_secret_data(secret, labels.SECRET_NAMESPACE_KEY).decode(errors="replace"),
            cluster_name=self.cluster_name,
        )

    # ------------------------------------------------------------------ the request

    def request_body(self) -> JsonObj:
        """The ClusterRegistrationRequest, in Clusternet's shape."""
        settings = self._settings
        crr = ClusterRegistrationRequest(
            metadata=ObjectMeta(
                name=self.crr_name,
                labels={
                    labels.REGISTERED_BY_LABEL: labels.CLUSTERNET_AGENT,
                    labels.CLUSTER_ID_LABEL: self.cluster_id,
                    labels.CLUSTER_NAME_LABEL: self.cluster_name,
                },
            ),
            spec=ClusterRegistrationRequestSpec(
                cluster_id=self.cluster_id,
                cluster_type=settings.cluster_type,
                cluster_name=self.cluster_name,
                cluster_namespace=settings.cluster_namespace,
                cluster_labels=dict(settings.cluster_labels),
                sync_mode=settings.sync_mode,
            ),
        )
        body = crr.to_dict()
        body.pop("status", None)
        return body

    async def _register_with(self, credentials: Credentials) -> Credentials:
        path = resource_path(labels.CLUSTERS_GROUP, "v1beta1", CRR_PLURAL)
        parent = self._parents.open(credentials)
        try:
            try:
                await parent.request("POST", path, body=self.request_body())
                self.requests_created += 1
                logger.info(
                    "created ClusterRegistrationRequest %s (cluster %s) with the %s credentials",
                    self.crr_name,
                    self.cluster_name,
                    "bootstrap" if credentials.bootstrap else "saved",
                )
            except errors.APIConflict:
                pass  # already there: its status tells what the parent decided
            crr = await self._wait_for_approval(parent, f"{path}/{self.crr_name}")
        finally:
            await parent.close()
        approved = Credentials(
            parent_url=credentials.parent_url,
            token=crr.status.token.decode("utf-8", "replace"),
            ca_pem=crr.status.ca_certificate,
            namespace=crr.status.dedicated_namespace,
            cluster_name=crr.status.managed_cluster_name or self.cluster_name,
        )
        await self._check(approved)
        await self._save(approved)
        logger.info(
            "registered cluster %s (%s) with %s; dedicated namespace %s",
            self.cluster_id,
            approved.cluster_name,
            credentials.parent_url,
            approved.namespace,
        )
        return approved

    async def _wait_for_approval(self, parent: KubeClient, path: str) -> ClusterRegistrationRequest:
        told = False
        period = self._settings.registration_retry_period
        while True:
            raw = await parent.request("GET", path)
            try:
                crr = ClusterRegistrationRequest.from_dict(raw)
            except ModelError as exc:
                raise errors.APITransportError(f"malformed {self.crr_name}: {exc}") from exc
            name = crr.metadata.labels.get(labels.CLUSTER_NAME_LABEL)
            if name and name != self.cluster_name:
                logger.info("the parent knows this cluster as %s: adopting the name", name)
                self.cluster_name = name
            result = crr.status.result
            if result == ApprovedResult.APPROVED:
                if not crr.status.token or not crr.status.dedicated_namespace:
                    raise RegistrationDenied(f"{self.crr_name} is Approved without credentials")
                return crr
            if result in (ApprovedResult.DENIED, ApprovedResult.FAILED):
                raise RegistrationDenied(
                    f"the parent {result.lower() if result else ''} registration request "
                    f"{self.crr_name}: {crr.status.error_message or 'no reason given'}"
                )
            if not told:
                logger.info("waiting for the parent to approve %s", self.crr_name)
                told = True
            await asyncio.sleep(period * (1 + random.uniform(0, 0.4)))

    async def _check(self, approved: Credentials) -> None:
        """The approved token works, over TLS verified with the approved CA."""
        parent = self._parents.open(approved)
        try:
            path = resource_path(labels.CLUSTERS_GROUP, "v1beta1", CRR_PLURAL, name=self.crr_name)
            await parent.request("GET", path)
        except errors.APIUnauthorized as exc:
            raise StaleApproval(
                f"{self.crr_name} is Approved but the parent rejects its token ({exc}); its "
                "ServiceAccount was probably deleted: waiting for the controller-manager to "
                "issue a new one"
            ) from exc
        finally:
            await parent.close()

    async def _save(self, approved: Credentials) -> None:
        """Create or update ``parent-cluster`` in the agent's namespace of the child."""
        namespace = self._settings.agent_namespace
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": labels.PARENT_CLUSTER_SECRET,
                "namespace": namespace,
                "labels": {
                    labels.CLUSTER_BOOTSTRAPPING_LABEL: labels.CREDENTIALS_AUTO,
                    labels.CLUSTER_ID_LABEL: self.cluster_id,
                    labels.CLUSTER_NAME_LABEL: approved.cluster_name,
                },
            },
            "type": "Opaque",
            "data": {
                labels.SECRET_CA_KEY: _b64(approved.ca_pem),
                labels.SECRET_TOKEN_KEY: _b64(approved.token),
                labels.SECRET_NAMESPACE_KEY: _b64(approved.namespace),
                labels.SECRET_APISERVER_URL_KEY: _b64(approved.parent_url),
            },
        }
        try:
            await self._child.request("POST", secret_path(namespace), body=body)
        except errors.APIConflict:
            await self._child.request(
                "PUT", secret_path(namespace, labels.PARENT_CLUSTER_SECRET), body=body
            )
