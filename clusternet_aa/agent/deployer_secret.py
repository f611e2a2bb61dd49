"""Hand the child's deployer credentials to the parent (reference §2.5).

The agent reads the token Secret of the child ServiceAccount
``<agent-ns>/clusternet-app-deployer`` and keeps Secret ``child-cluster-deployer`` in the
cluster's dedicated namespace of the parent equal to it (labels, annotation, finalizer and data
keys as Clusternet's), so that the controller-manager can push to and prune in the child. It is
created in Pull mode too, because pruning is done from the parent.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from clusternet_aa.agent.problems import Problems, Retry, classify
from clusternet_aa.agent.registration import secret_path
from clusternet_aa.agent.settings import AgentSettings
from clusternet_aa.agent.status import CredentialsRejected
from clusternet_aa.apis import labels
from clusternet_aa.kube import errors
from clusternet_aa.kube.client import JsonObj, KubeClient, resource_path

logger = logging.getLogger(__name__)

TOPIC = "child-cluster-deployer"


class DeployerCredentialsMissing(errors.KubeError):
    """The child has no usable token for ``clusternet-app-deployer`` yet."""


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


class DeployerSecretSync:
    """Keeps ``child-cluster-deployer`` up to date; ``await run()`` until cancelled."""

    def __init__(
        self,
        settings: AgentSettings,
        child: KubeClient,
        parent: KubeClient,
        *,
        namespace: str,
        cluster_id: str,
        problems: Problems,
    ) -> None:
        self._settings = settings
        self._child = child
        self._parent = parent
        self._namespace = namespace
        self._cluster_id = cluster_id
        self._problems = problems
        self.synced = asyncio.Event()

    async def run(self) -> None:
        retry = Retry(initial=1.0, maximum=self._settings.status_update_frequency)
        while True:
            try:
                await self.sync()
            except errors.APIUnauthorized as exc:
                raise CredentialsRejected(f"the parent rejects the dedicated token: {exc}") from exc
            except errors.KubeError as exc:
                self._problems.report(TOPIC, classify(exc), f"cannot hand over: {exc}")
                await retry.failed()
                continue
            retry.succeeded()
            self._problems.resolved(TOPIC)
            self.synced.set()
            await asyncio.sleep(self._settings.status_update_frequency)

    async def _child_token(self) -> tuple[JsonObj, bytes, bytes]:
        namespace = self._settings.agent_namespace
        name = labels.APP_DEPLOYER_SERVICE_ACCOUNT
        try:
            account = await self._child.request(
                "GET", resource_path("", "v1", "serviceaccounts", namespace=namespace, name=name)
            )
            secret = await self._child.request("GET", secret_path(namespace, name))
        except errors.APINotFound as exc:
            raise DeployerCredentialsMissing(
                f"ServiceAccount {namespace}/{name} or its token Secret is missing in the child "
                f"({exc}); the parent cannot deploy into this cluster until it exists"
            ) from exc
        data = secret.get("data") or {}
        token = base64.b64decode(str(data.get(labels.SECRET_TOKEN_KEY) or ""))
        ca = base64.b64decode(str(data.get(labels.SECRET_CA_KEY) or ""))
        if not token:
            raise DeployerCredentialsMissing(f"Secret {namespace}/{name} has no token yet")
        return account, token, ca

    async def sync(self) -> None:
        account, token, ca = await self._child_token()
        meta = account.get("metadata") or {}
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": labels.CHILD_CLUSTER_DEPLOYER_SECRET,
                "namespace": self._namespace,
                "labels": {
                    labels.OBJECT_CREATED_BY_LABEL: labels.CLUSTERNET_AGENT,
                    labels.CLUSTER_ID_LABEL: self._cluster_id,
                    labels.CLUSTER_BOOTSTRAPPING_LABEL: labels.CREDENTIALS_AUTO,
                },
                "annotations": {labels.AUTO_UPDATE_ANNOTATION: "true"},
                "finalizers": [labels.APPS_FINALIZER],
            },
            "type": "Opaque",
            "data": {
                labels.SECRET_CA_KEY: _b64(ca),
                labels.SECRET_TOKEN_KEY: _b64(token),
                labels.SECRET_SERVICE_ACCOUNT_NAME_KEY: _b64(str(meta.get("name") or "")),
                labels.SECRET_SERVICE_ACCOUNT_UID_KEY: _b64(str(meta.get("uid") or "")),
                labels.SECRET_APISERVER_URL_KEY: _b64(self._child.host),
            },
        }
        path = secret_path(self._namespace, labels.CHILD_CLUSTER_DEPLOYER_SECRET)
        try:
            current = await self._parent.request("GET", path)
        except errors.APINotFound:
            await self._parent.request("POST", secret_path(self._namespace), body=body)
            logger.info(
                "created Secret %s/%s in the parent", self._namespace, body["metadata"]["name"]
            )
            return
        if current.get("data") == body["data"]:
            return
        current_meta = current.get("metadata") or {}
        body["metadata"]["resourceVersion"] = current_meta.get("resourceVersion")
        finalizers = list(current_meta.get("finalizers") or [])
        if labels.APPS_FINALIZER not in finalizers:
            finalizers.append(labels.APPS_FINALIZER)
        body["metadata"]["finalizers"] = finalizers
        await self._parent.request("PUT", path, body=body)
        logger.info("updated Secret %s/%s in the parent", self._namespace, body["metadata"]["name"])
