"""Pods backed by local processes: kubesim's stand-in for a kubelet and container runtime.

With :class:`PodRuntimeConfig` set on an instance, every pod is "scheduled" to a node and run:
each container gets a working directory under the configured base directory, its
``command`` + ``args`` (if any) run as a real local process whose stdout and stderr become the
container log, the pod reports Running/Ready with ``podIP`` 127.0.0.1, and a container port maps
to a real TCP port on 127.0.0.1 (itself unless mapped). A container without a command runs
nothing and stays Running (like a pause container). A process that exits is restarted according
to ``restartPolicy`` after ``restart_delay``, keeping the previous instance's log for
``previous=true``. Deleting the pod, or stopping the server, kills every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clusternet_aa.sandbox.kubesim.objects import ObjectService
from clusternet_aa.sandbox.kubesim.pods.logs import DEFAULT_LOG_LIMIT, ContainerLog
from clusternet_aa.sandbox.kubesim.pods.process import LocalProcess, StartError
from clusternet_aa.sandbox.kubesim.registry import Registry
from clusternet_aa.sandbox.kubesim.store import now_timestamp
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj

logger = logging.getLogger(__name__)

_PODS = ("", "pods")
_NODES = ("", "nodes")
#: Pod annotation mapping container ports to local ports, as JSON: {"8080": 43123}.
PORTS_ANNOTATION = "kubesim.clusternet.io/local-ports"
POD_IP = "127.0.0.1"
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Receives live output of a container's main process: (stream number, bytes).
OutputListener = Callable[[int, bytes], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class PodRuntimeConfig:
    """How an instance runs its pods."""

    #: Base directory for pod working directories; None: a temporary one, removed at stop.
    workdir: Path | None = None
    #: containerPort -> local TCP port on 127.0.0.1 for every pod (the annotation
    #: ``kubesim.clusternet.io/local-ports`` overrides it per pod; unmapped ports map to
    #: themselves).
    ports: Mapping[int, int] = field(default_factory=dict)
    #: Extra environment for every process (besides PATH, HOME, HOSTNAME and the container's).
    env: Mapping[str, str] = field(default_factory=dict)
    #: Seconds before an exited container is started again (restartPolicy permitting).
    restart_delay: float = 1.0
    #: Keep pod working directories after the pod is gone.
    keep_workdirs: bool = False
    #: Bytes of log kept per container instance.
    log_limit: int = DEFAULT_LOG_LIMIT


def _hex_id(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


class Container:
    """One container of a running pod: its current process, logs and state."""

    def __init__(self, sandbox: PodSandbox, spec: Obj, workdir: Path, log_limit: int) -> None:
        self.sandbox = sandbox
        self.spec = spec
        self.name = str(spec.get("name", ""))
        self.workdir = workdir
        self.process: LocalProcess | None = None
        self.log = ContainerLog(log_limit)
        self.previous_log: ContainerLog | None = None
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.restart_count = 0
        self.container_id = ""
        self.listeners: set[OutputListener] = set()
        #: Set when the current instance ends (attach sessions end with it).
        self.instance_done = asyncio.Event()
        self._log_limit = log_limit

    @property
    def running(self) -> bool:
        return "running" in self.state

    def argv(self) -> list[str]:
        return [str(a) for a in (self.spec.get("command") or [])] + [
            str(a) for a in (self.spec.get("args") or [])
        ]

    async def _output(self, stream: int, chunk: bytes) -> None:
        self.log.append(stream, chunk)
        for listener in list(self.listeners):
            try:
                await listener(stream, chunk)
            except (ConnectionError, RuntimeError):
                self.listeners.discard(listener)

    def status(self) -> Obj:
        return {
            "name": self.name,
            "state": copy.deepcopy(self.state),
            "lastState": copy.deepcopy(self.last_state),
            "ready": self.running,
            "restartCount": self.restart_count,
            "image": str(self.spec.get("image", "")),
            "imageID": "",
            "containerID": f"containerd://{self.container_id}" if self.container_id else "",
            "started": self.running,
        }


class PodSandbox:
    """A running pod: its directory, containers and exec processes."""

    def __init__(self, pod: Obj, directory: Path, config: PodRuntimeConfig) -> None:
        meta = pod["metadata"]
        self.namespace = str(meta.get("namespace", ""))
        self.name = str(meta["name"])
        self.uid = str(meta.get("uid", ""))
        self.directory = directory
        self.config = config
        #: containerd's sandbox id: what kubelet errors call the pod.
        self.sandbox_id = _hex_id("sandbox", self.uid)
        self.netns = f"/var/run/netns/cni-{uuid.UUID(self.sandbox_id[:32])}"
        self.started_at = now_timestamp()
        self.containers: dict[str, Container] = {}
        for spec in (pod.get("spec") or {}).get("containers") or []:
            if isinstance(spec, dict) and spec.get("name"):
                workdir = directory / str(spec["name"])
                self.containers[str(spec["name"])] = Container(
                    self, spec, workdir, config.log_limit
                )
        self.restart_policy = str((pod.get("spec") or {}).get("restartPolicy", "Always"))
        self.execs: set[LocalProcess] = set()
        self.tasks: list[asyncio.Task[None]] = []
        self._transitions: dict[str, tuple[str, str]] = {}

    def environment(self, container: Container, *, tty: bool = False) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", _DEFAULT_PATH),
            "HOME": str(container.workdir),
            "HOSTNAME": self.name,
        }
        env.update(self.config.env)
        for item in container.spec.get("env") or []:
            if isinstance(item, dict) and "name" in item:
                env[str(item["name"])] = self._env_value(item)
        if tty:
            env["TERM"] = "xterm"
        return env

    def _env_value(self, item: Obj) -> str:
        if "value" in item:
            return str(item["value"])
        field_path = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        return {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "status.podIP": POD_IP,
            "status.hostIP": POD_IP,
        }.get(str(field_path), "")

    def kill(self) -> None:
        for container in self.containers.values():
            if container.process is not None:
                container.process.kill()
        for process in list(self.execs):
            process.kill()

    def condition(self, kind: str, status: str, now: str, **extra: str) -> Obj:
        previous = self._transitions.get(kind)
        if previous is None or previous[0] != status:
            self._transitions[kind] = (status, now)
        condition: Obj = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": self._transitions[kind][1],
        }
        condition.update(extra)
        return condition

    def phase(self) -> str:
        states = [c.state for c in self.containers.values()]
        if not states or any("terminated" not in s for s in states):
            return "Running"
        codes = [int(s["terminated"].get("exitCode", 0)) for s in states]
        return "Succeeded" if all(code == 0 for code in codes) else "Failed"

    def status(self, base: Obj) -> Obj:
        now = now_timestamp()
        status = copy.deepcopy(base)
        ready = all(c.running for c in self.containers.values())
        unready = [c.name for c in self.containers.values() if not c.running]
        not_ready: dict[str, str] = {}
        if not ready:
            not_ready = {
                "reason": "ContainersNotReady",
                "message": f"containers with unready status: [{' '.join(unready)}]",
            }
        phase = self.phase()
        status.update(
            {
                "phase": phase,
                "conditions": [
                    self.condition("PodReadyToStartContainers", "True", now),
                    self.condition("Initialized", "True", now),
                    self.condition("Ready", "True" if ready else "False", now, **not_ready),
                    self.condition(
                        "ContainersReady", "True" if ready else "False", now, **not_ready
                    ),
                    self.condition("PodScheduled", "True", now),
                ],
                "hostIP": POD_IP,
                "hostIPs": [{"ip": POD_IP}],
                "podIP": POD_IP,
                "podIPs": [{"ip": POD_IP}],
                "startTime": self.started_at,
                "containerStatuses": [c.status() for c in self.containers.values()],
            }
        )
        status.setdefault("qosClass", "BestEffort")
        return status


class PodRuntime:
    """Runs the pods of one server; ``reconcile`` is a controller, ``stop`` kills everything."""

    def __init__(
        self, service: ObjectService, registry: Registry, config: PodRuntimeConfig | None
    ) -> None:
        self.service = service
        self.registry = registry
        self.config = config
        self.sandboxes: dict[tuple[str, str], PodSandbox] = {}
        self._base: Path | None = None
        self._own_base = False
        self._cleanups: set[asyncio.Task[None]] = set()
        self._status_written = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return self.config is not None

    @property
    def base(self) -> Path:
        assert self.config is not None
        if self._base is None:
            if self.config.workdir is None:
                self._base = Path(tempfile.mkdtemp(prefix="kubesim-pods-"))
                self._own_base = True
            else:
                self._base = self.config.workdir
                self._base.mkdir(parents=True, exist_ok=True)
        return self._base

    def sandbox(self, namespace: str, name: str, uid: str = "") -> PodSandbox | None:
        found = self.sandboxes.get((namespace, name))
        if found is None or (uid and found.uid != uid):
            return None
        return found

    # -- the controller ------------------------------------------------------------------

    def reconcile(self) -> None:
        if self.config is None:
            return
        live: dict[tuple[str, str], Obj] = {}
        for pod in self.service.store.iter_refs(_PODS):
            meta = pod["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            live[(str(meta.get("namespace", "")), str(meta["name"]))] = pod
        for key, existing in list(self.sandboxes.items()):
            found = live.get(key)
            if found is None or found["metadata"].get("uid") != existing.uid:
                self._remove(key)
        for key, pod in live.items():
            if key not in self.sandboxes:
                self._create(pod)

    def _node_name(self) -> str:
        nodes = sorted(str(n["metadata"]["name"]) for n in self.service.store.iter_refs(_NODES))
        return nodes[0] if nodes else "kubesim-node-1"

    def _create(self, pod: Obj) -> None:
        assert self.config is not None
        meta = pod["metadata"]
        namespace, name = str(meta.get("namespace", "")), str(meta["name"])
        info = self.registry.lookup("", "v1", "pods")
        assert info is not None
        if not (pod.get("spec") or {}).get("nodeName"):
            bound = copy.deepcopy(pod)
            bound.setdefault("spec", {})["nodeName"] = self._node_name()
            bound, _ = self.service.update(info, bound)  # the scheduler's binding
            pod = bound
        directory = self.base / namespace / name
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
        sandbox = PodSandbox(pod, directory, self.config)
        for container in sandbox.containers.values():
            container.workdir.mkdir(parents=True, exist_ok=True)
        self.sandboxes[(namespace, name)] = sandbox
        loop = asyncio.get_running_loop()
        for container in sandbox.containers.values():
            sandbox.tasks.append(loop.create_task(self._run_container(container)))
        self._write_status(sandbox)

    def _remove(self, key: tuple[str, str]) -> None:
        sandbox = self.sandboxes.pop(key)
        sandbox.kill()
        for task in sandbox.tasks:
            task.cancel()
        cleanup = asyncio.get_running_loop().create_task(self._cleanup(sandbox))
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanups.discard)

    async def _cleanup(self, sandbox: PodSandbox) -> None:
        for task in sandbox.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for process in list(sandbox.execs):
            process.kill()
            with contextlib.suppress(ProcessLookupError):
                await process.process.wait()
        if self.config is not None and not self.config.keep_workdirs:
            shutil.rmtree(sandbox.directory, ignore_errors=True)

    async def stop(self) -> None:
        """Kill every pod's processes and wait for them; remove a temporary base directory."""
        for key in list(self.sandboxes):
            self._remove(key)
        while self._cleanups:
            await asyncio.gather(*list(self._cleanups), return_exceptions=True)
        if self._own_base and self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None

    async def settle(self) -> None:
        """Wait until every pod's containers have been started (or failed to start)."""
        while any(
            "ContainerCreating" in str(c.state)
            for sandbox in self.sandboxes.values()
            for c in sandbox.containers.values()
        ):
            self._status_written.clear()
            await self._status_written.wait()

    # -- containers ----------------------------------------------------------------------

    def _write_status(self, sandbox: PodSandbox) -> None:
        self._status_written.set()
        if self.sandboxes.get((sandbox.namespace, sandbox.name)) is not sandbox:
            return
        info = self.registry.lookup("", "v1", "pods")
        assert info is not None
        current = self.service.store.get(_PODS, sandbox.namespace, sandbox.name)
        if current is None or current["metadata"].get("uid") != sandbox.uid:
            return
        updated = copy.deepcopy(current)
        updated["status"] = sandbox.status(current.get("status") or {})
        try:
            self.service.update(info, updated, subresource="status")
        except KubesimError as e:
            logger.debug(
                "kubesim pods: status of %s/%s not written: %s", sandbox.namespace, sandbox.name, e
            )

    async def _run_container(self, container: Container) -> None:
        sandbox = container.sandbox
        assert self.config is not None
        while True:
            container.container_id = _hex_id(
                "container", sandbox.uid, container.name, str(container.restart_count)
            )
            started = now_timestamp()
            argv = container.argv()
            code: int
            if not argv:
                container.state = {"running": {"startedAt": started}}
                self._write_status(sandbox)
                await asyncio.Event().wait()  # nothing to run: up until the pod goes
                return
            try:
                process = await LocalProcess.start(
                    argv,
                    cwd=container.workdir,
                    env=sandbox.environment(container, tty=bool(container.spec.get("tty"))),
                    stdin=bool(container.spec.get("stdin")),
                    tty=bool(container.spec.get("tty")),
                )
            except StartError as e:
                code = 128
                finished = now_timestamp()
                container.log.close()
                container.state = {
                    "terminated": {
                        "exitCode": code,
                        "reason": "StartError",
                        "message": "failed to create containerd task: failed to create shim "
                        "task: OCI runtime create failed: runc create failed: unable to start "
                        f"container process: {e.detail}: unknown",
                        "startedAt": "1970-01-01T00:00:00Z",
                        "finishedAt": finished,
                        "containerID": f"containerd://{container.container_id}",
                    }
                }
            else:
                container.process = process
                container.state = {"running": {"startedAt": started}}
                self._write_status(sandbox)
                try:
                    code = await process.run(container._output)
                except asyncio.CancelledError:
                    process.kill()
                    await process.process.wait()
                    raise
                finally:
                    container.log.close()
                    container.instance_done.set()
                container.state = {
                    "terminated": {
                        "exitCode": _exit_code(code),
                        "reason": "Completed" if code == 0 else "Error",
                        "startedAt": started,
                        "finishedAt": now_timestamp(),
                        "containerID": f"containerd://{container.container_id}",
                    }
                }
                code = _exit_code(code)
            restart = sandbox.restart_policy == "Always" or (
                sandbox.restart_policy == "OnFailure" and code != 0
            )
            if not restart:
                self._write_status(sandbox)
                return
            container.last_state = container.state
            container.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {self.config.restart_delay:g}s restarting failed "
                    f"container={container.name} pod={sandbox.name}_{sandbox.namespace}"
                    f"({sandbox.uid})",
                }
            }
            self._write_status(sandbox)
            await asyncio.sleep(self.config.restart_delay)
            container.restart_count += 1
            container.previous_log = container.log
            container.log = ContainerLog(self.config.log_limit)
            container.instance_done = asyncio.Event()
            container.process = None

    # -- what the handlers need ----------------------------------------------------------

    def local_port(self, sandbox: PodSandbox, port: int) -> int:
        """The real 127.0.0.1 port behind ``port`` of the pod."""
        pod = self.service.store.get(_PODS, sandbox.namespace, sandbox.name)
        annotations = ((pod or {}).get("metadata") or {}).get("annotations") or {}
        raw = annotations.get(PORTS_ANNOTATION)
        if raw:
            try:
                mapping = {int(k): int(v) for k, v in json.loads(raw).items()}
            except (ValueError, AttributeError, TypeError):
                mapping = {}
            if port in mapping:
                return mapping[port]
        assert self.config is not None
        return int(self.config.ports.get(port, port))

    async def start_exec(
        self, container: Container, argv: list[str], *, stdin: bool, tty: bool
    ) -> LocalProcess:
        sandbox = container.sandbox
        process = await LocalProcess.start(
            argv,
            cwd=container.workdir,
            env=sandbox.environment(container, tty=tty),
            stdin=stdin,
            tty=tty,
        )
        sandbox.execs.add(process)
        return process

    def finish_exec(self, container: Container, process: LocalProcess) -> None:
        process.kill()
        container.sandbox.execs.discard(process)


def _exit_code(returncode: int) -> int:
    """A signal death as the shell and kubelet report it: 128 + signal number."""
    return 128 - returncode if returncode < 0 else returncode
