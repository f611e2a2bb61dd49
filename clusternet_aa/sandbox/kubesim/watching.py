"""Watch streams: ``?watch=true|True|1`` and the legacy ``/watch/`` paths.

The stream is what kube-apiserver writes: HTTP 200, ``Content-Type: application/json`` (or the
Table media type for kubectl), chunked, one ``{"type":…,"object":…}`` JSON document per line,
flushed per event. A resourceVersion older than the history gives a 410 ``ERROR`` event inside the
200 stream; selectors turn modifications that leave or enter the selection into DELETED and ADDED,
as kube's watch cache does.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from clusternet_aa.sandbox.kubesim import negotiation
from clusternet_aa.sandbox.kubesim.requestinfo import parse_bool
from clusternet_aa.sandbox.kubesim.rest import Call, RestHandlers, encode
from clusternet_aa.sandbox.kubesim.store import Event, Watcher
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj

Selected = Callable[["Obj | None"], bool]
Frame = Callable[[str, Obj], bytes]
Bookmark = Callable[["dict[str, str] | None"], bytes]

#: The annotation on the bookmark that ends the initial events of ``sendInitialEvents``.
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


@dataclass(frozen=True, kw_only=True)
class WatchSettings:
    """Server-side watch limits."""

    #: Seconds a watch without ``timeoutSeconds`` lasts (kube: 30-60 min).
    default_timeout: float = 1800.0
    #: Seconds between BOOKMARK events when the client allows them.
    bookmark_interval: float = 60.0


class WatchHandler:
    """Serves watch requests for a :class:`RestHandlers`."""

    def __init__(self, rest: RestHandlers, settings: WatchSettings) -> None:
        self.rest = rest
        self.settings = settings

    async def __call__(self, call: Call) -> web.StreamResponse:
        query = call.request.query
        label, fields = self.rest.selectors(call)
        name_only = call.info.name if "fieldSelector" not in query else ""
        resource = call.resource
        service = self.rest.service
        namespace = call.info.namespace if resource.namespaced and call.info.namespace else None
        bookmarks = _bool(query.get("allowWatchBookmarks", ""), "allowWatchBookmarks")
        send_initial = _bool(query.get("sendInitialEvents", ""), "sendInitialEvents")
        timeout = _timeout(query.get("timeoutSeconds", ""), self.settings.default_timeout)
        table = negotiation.wants_table(call.request.headers.get("Accept", ""))
        rv_text = query.get("resourceVersion", "")

        def selected(obj: Obj | None) -> bool:
            if obj is None:
                return False
            meta = obj.get("metadata", {})
            if name_only and meta.get("name") != name_only:
                return False
            return label.matches(meta.get("labels") or {}) and fields.matches(obj)

        initial: list[Obj] = []
        error: KubesimError | None = None
        watcher: Watcher | None = None
        store = service.store
        key = (resource.group, resource.resource)
        if rv_text in ("", "0") or send_initial:
            watcher = store.watch(key, namespace, since=None)
            items, _ = service.list_objects(resource, namespace)
            initial = [o for o in items if selected(o)]
        else:
            try:
                since = int(rv_text)
            except ValueError:
                raise KubesimError(
                    400, "BadRequest", f'invalid resource version "{rv_text}"'
                ) from None
            try:
                watcher = store.watch(key, namespace, since=since)
            except KubesimError as e:
                error = e

        response = web.StreamResponse(status=200)
        response.headers["Content-Type"] = negotiation.TABLE_V1 if table else negotiation.JSON
        response.headers["Cache-Control"] = "no-cache, private"
        response.enable_chunked_encoding()
        await response.prepare(call.request)

        first = True

        def frame(kind: str, obj: Obj) -> bytes:
            nonlocal first
            if table and kind != "ERROR" and kind != "BOOKMARK":
                obj = self.rest.table(
                    call, [obj], {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
                )
                if not first:
                    obj["columnDefinitions"] = []
                first = False
            return encode({"type": kind, "object": obj}) + b"\n"

        def bookmark(annotations: dict[str, str] | None = None) -> bytes:
            meta: Obj = {"resourceVersion": str(store.resource_version)}
            if annotations:
                meta["annotations"] = annotations
            obj = {"kind": resource.kind, "apiVersion": resource.group_version, "metadata": meta}
            return encode({"type": "BOOKMARK", "object": obj}) + b"\n"

        try:
            if error is not None:
                await response.write(frame("ERROR", error.to_status()))
                return response
            assert watcher is not None
            for obj in initial:
                await response.write(frame("ADDED", obj))
            if send_initial and bookmarks:
                await response.write(bookmark({INITIAL_EVENTS_END: "true"}))
            await self._stream(
                response,
                watcher,
                resource_call=call,
                selected=selected,
                frame=frame,
                bookmark=bookmark if bookmarks and not table else None,
                duration=timeout,
            )
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            if watcher is not None:
                store.unwatch(watcher)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _stream(
        self,
        response: web.StreamResponse,
        watcher: Watcher,
        *,
        resource_call: Call,
        selected: Selected,
        frame: Frame,
        bookmark: Bookmark | None,
        duration: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration
        interval = self.settings.bookmark_interval
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            wait = min(remaining, interval) if bookmark is not None else remaining
            try:
                batch = await asyncio.wait_for(watcher.next_batch(), wait)
            except TimeoutError:
                if bookmark is not None and deadline - loop.time() > 0:
                    await response.write(bookmark(None))
                continue
            if not batch:
                return  # closed: server shutdown, a deleted CRD, or a watcher too slow
            for event in batch:
                translated = _translate(event, selected)
                if translated is not None:
                    kind, obj = translated[0], copy.deepcopy(translated[1])
                    self.rest.service.present(resource_call.resource, obj)
                    await response.write(frame(kind, obj))


def _translate(event: Event, selected: Selected) -> tuple[str, Obj] | None:
    """The event a selective watcher sees (kube's watch cache filtering)."""
    now = bool(selected(event.object))
    before = bool(selected(event.previous))
    if event.type == "ADDED":
        return ("ADDED", event.object) if now else None
    if event.type == "DELETED":
        return ("DELETED", event.object) if before or now else None
    if now and before:
        return ("MODIFIED", event.object)
    if now:
        return ("ADDED", event.object)
    if before:
        return ("DELETED", event.object)
    return None


def _bool(value: str, name: str) -> bool:
    return bool(value) and parse_bool(value, name)


def _timeout(value: str, default: float) -> float:
    if not value:
        return default
    try:
        seconds = int(value)
    except ValueError:
        raise KubesimError(
            400, "BadRequest", f'invalid value "{value}" for parameter "timeoutSeconds"'
        ) from None
    return float(seconds) if seconds > 0 else default
