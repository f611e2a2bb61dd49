"""Container logs: what a container process printed, and ``GET pods/<name>/log``.

The kubelet keeps a container's output as timestamped lines (the CRI log format), one file per
container instance, and serves them with tailLines, sinceSeconds/sinceTime, timestamps,
limitBytes and follow. :class:`ContainerLog` is that file held in memory; :func:`stream_log`
writes a selection of it to an HTTP response, flushing line by line while following, and stops
following when the container instance has ended, as the kubelet does.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from clusternet_aa.sandbox.kubesim.pods.connect import choose_container
from clusternet_aa.sandbox.kubesim.rest import Call
from clusternet_aa.sandbox.kubesim.types import KubesimError

if TYPE_CHECKING:
    from clusternet_aa.sandbox.kubesim.pods.runtime import PodRuntime

#: Oldest lines are dropped beyond this many bytes per container instance.
DEFAULT_LOG_LIMIT = 16 * 1024 * 1024
#: containerd cuts a line longer than this into partial records.
_MAX_LINE = 16 * 1024


def rfc3339_nano(ns: int) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: nanoseconds with trailing zeros trimmed."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{base}.{fraction}Z" if fraction else f"{base}Z"


def rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class LogRecord:
    time_ns: int
    stream: int
    line: bytes


class ContainerLog:
    """The output of one container instance, line by line, with waiters for new lines."""

    def __init__(self, limit: int = DEFAULT_LOG_LIMIT) -> None:
        self.records: list[LogRecord] = []
        #: Index of records[0] in the whole history (older ones were dropped).
        self.offset = 0
        self.closed = False
        self._limit = limit
        self._size = 0
        self._partial: dict[int, bytearray] = {}
        self._changed = asyncio.Event()

    def append(self, stream: int, chunk: bytes) -> None:
        pending = self._partial.setdefault(stream, bytearray())
        pending += chunk
        while True:
            cut = pending.find(b"\n")
            if cut < 0:
                if len(pending) >= _MAX_LINE:
                    self._record(stream, bytes(pending[:_MAX_LINE]))
                    del pending[:_MAX_LINE]
                    continue
                break
            self._record(stream, bytes(pending[: cut + 1]))
            del pending[: cut + 1]

    def _record(self, stream: int, line: bytes) -> None:
        self.records.append(LogRecord(time.time_ns(), stream, line))
        self._size += len(line)
        while self._size > self._limit and self.records:
            self._size -= len(self.records.pop(0).line)
            self.offset += 1
        self._wake()

    def close(self) -> None:
        """The instance ended: flush partial lines, release followers."""
        for stream, pending in self._partial.items():
            if pending:
                self._record(stream, bytes(pending))
        self._partial.clear()
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


@dataclass(frozen=True, kw_only=True)
class LogOptions:
    """``PodLogOptions`` from the query, validated as kube-apiserver does."""

    container: str = ""
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since_ns: int | None = None


def _query_bool(value: str | None) -> bool:
    """kube's query-to-bool conversion: anything but "0" and "false" is true."""
    if value is None:
        return False
    return value != "0" and value.lower() != "false"


def _query_int(call: Call, name: str) -> int | None:
    value = call.request.query.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise KubesimError(
            400,
            "BadRequest",
            f'strconv.ParseInt: parsing "{value}": invalid syntax',
        ) from None


def _parse_time(value: str) -> int:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise KubesimError(
            400,
            "BadRequest",
            f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse "{value}" '
            'as "2006"',
        ) from None
    return int(parsed.timestamp()) * 1_000_000_000


def parse_log_options(call: Call) -> LogOptions:
    query = call.request.query
    tail = _query_int(call, "tailLines")
    limit = _query_int(call, "limitBytes")
    since_seconds = _query_int(call, "sinceSeconds")
    since_time = query.get("sinceTime")
    problems: list[str] = []
    if tail is not None and tail < 0:
        problems.append(f"tailLines: Invalid value: {tail}: must be greater than or equal to 0")
    if limit is not None and limit < 1:
        problems.append(f"limitBytes: Invalid value: {limit}: must be greater than 0")
    if since_seconds is not None and since_time is not None:
        problems.append(
            "<nil>: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
        )
    elif since_seconds is not None and since_seconds < 1:
        problems.append(f"sinceSeconds: Invalid value: {since_seconds}: must be greater than 0")
    stream = query.get("stream")
    if stream is not None and stream not in ("All", "Stdout", "Stderr"):
        problems.append(
            f'stream: Unsupported value: "{stream}": supported values: "All", "Stderr", "Stdout"'
        )
    if problems:
        joined = problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
        raise KubesimError(422, "Invalid", f'PodLogOptions "{call.info.name}" is invalid: {joined}')
    since_ns: int | None = None
    if since_seconds is not None:
        since_ns = time.time_ns() - since_seconds * 1_000_000_000
    elif since_time is not None:
        since_ns = _parse_time(since_time)
    return LogOptions(
        container=query.get("container", ""),
        follow=_query_bool(query.get("follow")),
        previous=_query_bool(query.get("previous")),
        timestamps=_query_bool(query.get("timestamps")),
        tail_lines=tail,
        limit_bytes=limit,
        since_ns=since_ns,
    )


def _stream_filter(call: Call) -> int | None:
    stream = call.request.query.get("stream", "All")
    return {"Stdout": 1, "Stderr": 2}.get(stream)


async def stream_log(
    call: Call, log: ContainerLog | None, options: LogOptions
) -> web.StreamResponse:
    """Write the selected lines of ``log`` (None: nothing to show) as ``text/plain``."""
    response = web.StreamResponse(status=200)
    response.content_type = "text/plain"
    await response.prepare(call.request)
    if log is None:
        await response.write_eof()
        return response
    only = _stream_filter(call)
    remaining = options.limit_bytes

    def selected(start: int) -> tuple[list[LogRecord], int]:
        index = max(start - log.offset, 0)
        picked = [
            r
            for r in log.records[index:]
            if (only is None or r.stream == only)
            and (options.since_ns is None or r.time_ns >= options.since_ns)
        ]
        return picked, log.offset + len(log.records)

    records, position = selected(0)
    if options.tail_lines is not None:
        records = records[-options.tail_lines :] if options.tail_lines else []
    while True:
        for record in records:
            chunk = record.line
            if options.timestamps:
                chunk = rfc3339_nano(record.time_ns).encode() + b" " + chunk
            if remaining is not None:
                chunk = chunk[:remaining]
                remaining -= len(chunk)
            await response.write(chunk)
            if remaining == 0:
                await response.write_eof()
                return response
        if not options.follow:
            break
        if log.offset + len(log.records) == position:
            if log.closed:
                break
            await log.changed()
        records, position = selected(position)
    await response.write_eof()
    return response


class LogHandler:
    """``GET pods/<name>/log``: kube-apiserver's checks, then the kubelet's answer."""

    def __init__(self, runtime: PodRuntime) -> None:
        self.runtime = runtime

    async def __call__(self, call: Call) -> web.StreamResponse:
        if call.info.verb != "get":
            raise KubesimError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        options = parse_log_options(call)
        pod = self.runtime.service.get(call.resource, call.namespace, call.info.name)
        name = choose_container(pod, options.container)
        if not (pod.get("spec") or {}).get("nodeName"):
            return await stream_log(call, None, options)  # unscheduled: an empty log
        meta = pod["metadata"]
        pod_name = str(meta["name"])
        sandbox = self.runtime.sandbox(
            str(meta.get("namespace", "")), pod_name, str(meta.get("uid", ""))
        )
        if sandbox is None or name not in sandbox.containers:
            raise KubesimError(
                404,
                "NotFound",
                f"the server could not find the requested resource ( pods/log {pod_name})",
                details={"name": pod_name, "kind": "pods/log"},
            )
        container = sandbox.containers[name]
        if options.previous:
            if container.previous_log is None:
                raise KubesimError(
                    400,
                    "BadRequest",
                    f'previous terminated container "{name}" in pod "{pod_name}" not found',
                )
            return await stream_log(call, container.previous_log, options)
        waiting = container.state.get("waiting")
        if waiting is not None and not container.last_state:
            raise KubesimError(
                400,
                "BadRequest",
                f'container "{name}" in pod "{pod_name}" is waiting to start: '
                f"{waiting.get('reason', '')}",
            )
        return await stream_log(call, container.log, options)
