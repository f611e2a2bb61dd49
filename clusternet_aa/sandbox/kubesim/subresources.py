"""The generic subresources: ``status``, ``scale`` and a namespace's ``finalize``.

``status`` reads the whole object and writes only its status (kube's status strategies);
``scale`` exposes ``spec.replicas`` as an ``autoscaling/v1`` Scale, which is what ``kubectl
scale`` and HPA-style controllers read and write.
"""

from __future__ import annotations

import copy

from aiohttp import web

from clusternet_aa.sandbox.kubesim import bodies, selectors
from clusternet_aa.sandbox.kubesim.objects import conflict
from clusternet_aa.sandbox.kubesim.rest import Call, RestHandlers, json_response
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj


def _method_not_allowed(call: Call) -> KubesimError:
    return KubesimError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    )


class GenericSubresources:
    """Registers status/scale/finalize handlers on a :class:`RestHandlers`."""

    def __init__(self, rest: RestHandlers) -> None:
        self.rest = rest

    def install(self, group: str, resource: str, subresources: tuple[str, ...]) -> None:
        for sub in subresources:
            if sub == "status":
                self.rest.subresources[(group, resource, sub)] = self.status
            elif sub == "scale":
                self.rest.subresources[(group, resource, sub)] = self.scale
            elif sub == "finalize":
                self.rest.subresources[(group, resource, sub)] = self.finalize

    def uninstall(self, group: str, resource: str) -> None:
        for key in [k for k in self.rest.subresources if k[:2] == (group, resource)]:
            del self.rest.subresources[key]

    async def status(self, call: Call) -> web.StreamResponse:
        rest, service = self.rest, self.rest.service
        verb = call.info.verb
        if verb == "get":
            return rest.respond_object(
                call, service.get(call.resource, call.namespace, call.info.name)
            )
        if verb == "update":
            obj = await rest.read_object(call)
            rest.check_type_meta(call, obj)
            rest.check_namespace(call, obj)
            rest.check_name(call, obj)
            obj = rest.validate(call, obj, verb="update")
            current = service.get(call.resource, call.namespace, call.info.name)
            obj = rest.record(call, current, obj)
            result, _ = service.update(call.resource, obj, subresource="status")
            return rest.respond_object(call, result)
        if verb == "patch":
            current = service.get(call.resource, call.namespace, call.info.name)
            patched = await rest.apply_patch(call, current)
            rest._check_patched(call, patched)
            if bodies.media_type(call.request.headers.get("Content-Type")) != bodies.APPLY_PATCH:
                patched = rest.record(call, current, patched)
            result, _ = service.update(call.resource, patched, subresource="status", old=current)
            return rest.respond_object(call, result)
        raise _method_not_allowed(call)

    async def finalize(self, call: Call) -> web.StreamResponse:
        if call.info.verb != "update":
            raise _method_not_allowed(call)
        obj = await self.rest.read_object(call)
        self.rest.check_type_meta(call, obj)
        self.rest.check_name(call, obj)
        result, _ = self.rest.service.update(call.resource, obj, subresource="finalize")
        return self.rest.respond_object(call, result)

    def _scale_of(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        spec = obj.get("spec") or {}
        selector = selectors.label_selector_from_dict(spec.get("selector") or {})
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": spec.get("replicas", 1)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": str(selector),
            },
        }

    async def scale(self, call: Call) -> web.StreamResponse:
        rest, service = self.rest, self.rest.service
        current = service.get(call.resource, call.namespace, call.info.name)
        verb = call.info.verb
        if verb == "get":
            return json_response(call, self._scale_of(current))
        if verb == "update":
            scale = await rest.read_object(call)
            rest.check_type_meta(call, scale, expected_kind="Scale")
            rest.check_name(call, scale)
        elif verb == "patch":
            scale = await rest.apply_patch(call, self._scale_of(current))
        else:
            raise _method_not_allowed(call)
        wanted_rv = (scale.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise conflict(
                call.resource,
                call.info.name,
                "the object has been modified; please apply your changes to the latest version "
                "and try again",
            )
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise KubesimError(
                422,
                "Invalid",
                f'Scale.autoscaling "{call.info.name}" is invalid: spec.replicas: Invalid value: '
                f"{replicas}: must be greater than or equal to 0",
            )
        updated = copy.deepcopy(current)
        updated.setdefault("spec", {})["replicas"] = replicas
        result, _ = service.update(call.resource, updated, old=current)
        return json_response(call, self._scale_of(result))
