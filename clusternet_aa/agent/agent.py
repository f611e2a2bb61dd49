"""The agent process: leader election, then registration, heartbeats and the tunnel.

Replicas of the agent share the Lease ``<agent-ns>/clusternet-agent`` in the child; only the
holder works (as Clusternet, and since Oct 2025 it re-runs everything when it regains the
Lease):

1. resolve the cluster id (the Lease's uid, or its ``legacy-cluster-id`` annotation);
2. register (:mod:`.registration`) and keep the dedicated credentials;
3. with those credentials, concurrently: collect and report the status (:mod:`.status`), keep
   ``child-cluster-deployer`` in the parent (:mod:`.deployer_secret`), and hold the tunnel to
   the hub (:mod:`.tunnel_client`, gate ``SocketConnection``) whose streams the
   :class:`~clusternet_aa.proxy.executor.Executor` serves with the agent's own credentials for
   the child. The parent's TLS is verified with the CA from the approval.

When the parent stops accepting the dedicated token (a 401 from a report, the deployer Secret
or the tunnel upgrade), step 3 stops and the agent registers again, falling back to the
bootstrap token. Nothing here ends the process on a Kubernetes error: every loop reports the
cause once and retries with backoff. A standby takes over within the lease duration; a stopping
leader releases the Lease so that takes a retry period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable
from typing import Any

from kubernetes_asyncio import client as k8s_client
from yarl import URL

from clusternet_aa.agent.deployer_secret import DeployerSecretSync
from clusternet_aa.agent.identity import resolve_cluster_id
from clusternet_aa.agent.problems import Problems, Retry, classify
from clusternet_aa.agent.registration import Credentials, ParentClients, Registrar
from clusternet_aa.agent.settings import AgentSettings
from clusternet_aa.agent.status import CredentialsRejected, StatusCollector, StatusReporter
from clusternet_aa.agent.tunnel_client import Backoff, TunnelClient, tunnel_url
from clusternet_aa.kube import errors
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.kube.leader_election import LeaderElectionConfig, LeaderElector, default_identity
from clusternet_aa.proxy.dialer import allow_addresses
from clusternet_aa.proxy.executor import ChildApiserver, Executor
from clusternet_aa.tunnel.protocol.settings import Settings as TunnelSettings

logger = logging.getLogger(__name__)

#: Seconds between refreshes of the agent's own child token (in-cluster tokens rotate).
TOKEN_REFRESH_SECONDS = 60.0


class ChildCredentials:
    """The agent's credentials for its own cluster, as the executor needs them."""

    def __init__(self, configuration: k8s_client.Configuration) -> None:
        self._configuration = configuration
        self._token = self._current()

    def _current(self) -> str | None:
        value = self._configuration.api_key.get("BearerToken")
        if not value:
            return None
        text = str(value)
        return text[len("Bearer ") :] if text.startswith("Bearer ") else text

    def token(self) -> str | None:
        return self._token

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(TOKEN_REFRESH_SECONDS)
            with contextlib.suppress(Exception):  # the hook reads a file; keep the old token
                await self._configuration.get_api_key_with_prefix("BearerToken")
            self._token = self._current() or self._token

    def ssl_context(self) -> ssl.SSLContext:
        configuration = self._configuration
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class Agent:
    """One agent replica. ``await run()`` until cancelled."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        child: KubeClient | None = None,
        identity: str | None = None,
        tunnel_backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self._child = child
        self._owns_child = child is None
        self.identity = identity or default_identity()
        self._tunnel_backoff = tunnel_backoff
        self.problems = Problems(logger)
        self.parents = ParentClients()
        #: Set while this replica leads and has registered (for tests and health checks).
        self.serving = asyncio.Event()
        self.cluster_id = ""
        self.credentials: Credentials | None = None
        self.registrar: Registrar | None = None
        self.reporter: StatusReporter | None = None
        self.collector: StatusCollector | None = None
        self.deployer: DeployerSecretSync | None = None
        self.tunnel: TunnelClient | None = None
        self.elector: LeaderElector | None = None

    @property
    def child(self) -> KubeClient:
        assert self._child is not None, "run() opens the child client"
        return self._child

    async def run(self) -> None:
        if self._child is None:
            self._child = await KubeClient.from_kubeconfig(self.settings.kubeconfig)
        try:
            election = self.settings.leader_election
            if not election.enabled:
                await self._lead()
                return
            self.elector = LeaderElector(
                self.child,
                LeaderElectionConfig(
                    namespace=election.namespace,
                    name=election.name,
                    identity=self.identity,
                    lease_duration=election.lease_duration,
                    renew_deadline=election.renew_deadline,
                    retry_period=election.retry_period,
                ),
                on_started_leading=self._lead,
                on_stopped_leading=self._stopped_leading,
            )
            while True:
                try:
                    await self.elector.run()
                except errors.KubeError as exc:  # defensive: _lead handles its own errors
                    logger.error("leading ended with an error: %s", exc)
                logger.info("standing by: waiting to lead again")
        finally:
            self.parents.close()
            if self._owns_child and self._child is not None:
                await self._child.close()

    def _stopped_leading(self) -> None:
        self.serving.clear()
        logger.info("stopped leading")

    async def _lead(self) -> None:
        """Everything the leader does; returns only when cancelled."""
        self.cluster_id = await self._cluster_id()
        logger.info("cluster id %s", self.cluster_id)
        registrar = Registrar(
            self.settings, self.child, self.cluster_id, self.parents, self.problems
        )
        self.registrar = registrar
        retry = Retry(initial=self.settings.registration_retry_period)
        while True:
            credentials = await registrar.register()
            self.credentials = credentials
            self.problems.resolved("credentials")
            try:
                await self._serve(credentials)
            except CredentialsRejected as exc:
                self.problems.report(
                    "credentials", "rejected", f"{exc}; registering again with the bootstrap token"
                )
                registrar.forget_saved_credentials()
                retry.succeeded()
            except Exception as exc:  # a bug must not kill the agent: log it, retry
                logger.exception("agent work failed unexpectedly: %s", exc)
                await retry.failed()
            finally:
                self.serving.clear()

    async def _cluster_id(self) -> str:
        election = self.settings.leader_election
        retry = Retry(initial=self.settings.registration_retry_period)
        while True:
            try:
                cluster_id = await resolve_cluster_id(self.child, election.namespace, election.name)
            except errors.KubeError as exc:
                self.problems.report(
                    "cluster id",
                    classify(exc),
                    f"cannot read Lease {election.namespace}/{election.name} in the child: {exc}",
                )
                await retry.failed()
                continue
            self.problems.resolved("cluster id")
            return cluster_id

    async def _serve(self, credentials: Credentials) -> None:
        """Report, hand over and tunnel until the dedicated credentials are rejected."""
        settings = self.settings
        parent = self.parents.open(credentials)
        rejected = asyncio.Event()
        collector = StatusCollector(settings, self.child, self.problems)
        reporter = StatusReporter(
            settings,
            parent,
            namespace=credentials.namespace,
            cluster_id=self.cluster_id,
            collector=collector,
            problems=self.problems,
        )
        deployer = DeployerSecretSync(
            settings,
            self.child,
            parent,
            namespace=credentials.namespace,
            cluster_id=self.cluster_id,
            problems=self.problems,
        )
        self.collector, self.reporter, self.deployer = collector, reporter, deployer
        work: list[Awaitable[Any]] = [collector.run(), reporter.run(), deployer.run()]
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(parent.close)
            if settings.socket_connection:
                tunnel = await self._tunnel(credentials, stack, rejected)
                work.append(tunnel.run())
            tasks = [asyncio.ensure_future(item) for item in work]
            tasks.append(asyncio.ensure_future(rejected.wait()))
            self.serving.set()
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if self.tunnel is not None:
                    self.tunnel.stop()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self.tunnel = None
            for task in done:
                failure = None if task.cancelled() else task.exception()
                if failure is not None:
                    raise failure
            raise CredentialsRejected("the parent refused the tunnel upgrade with 401")

    async def _tunnel(
        self, credentials: Credentials, stack: contextlib.AsyncExitStack, rejected: asyncio.Event
    ) -> TunnelClient:
        settings = self.settings
        configuration = self.child.api.configuration
        child_credentials = ChildCredentials(configuration)
        refresher = asyncio.ensure_future(child_credentials.refresh_forever())
        stack.callback(refresher.cancel)
        child_url = URL(self.child.host)
        own = f"{child_url.host}:{child_url.port}"
        executor = Executor(
            ChildApiserver(
                url=self.child.host,
                ssl_context=child_credentials.ssl_context(),
                token=child_credentials.token,
            ),
            dial_policy=allow_addresses([own, *settings.dial_allow]),
        )
        await stack.enter_async_context(executor)
        if settings.hub_url and settings.hub_ca_file is not None:
            tls = ssl.create_default_context(cafile=str(settings.hub_ca_file))
        else:
            tls = credentials.ssl_context()
        url = tunnel_url(settings.hub_url or credentials.parent_url, self.cluster_id)
        token = credentials.token
        self.tunnel = TunnelClient(
            url,
            executor,
            token=lambda: token,
            ssl_context=tls,
            settings=TunnelSettings(
                keepalive_interval=settings.tunnel_keepalive_interval,
                keepalive_misses=settings.tunnel_keepalive_misses,
            ),
            backoff=self._tunnel_backoff,
            on_unauthorized=rejected.set,
        )
        return self.tunnel
