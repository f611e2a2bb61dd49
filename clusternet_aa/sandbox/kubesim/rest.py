"""The REST verbs over HTTP: create, get, list, update, patch, delete, deletecollection.

Each handler decodes the request, checks what kube-apiserver checks before touching storage
(type meta, names and namespaces in body versus URL, query parameters), calls
:class:`ObjectService`, and encodes the answer (JSON, or a Table for kubectl). Subresources and
create-only virtual resources (reviews) are looked up in tables other modules fill, so exec, logs
or aggregation can be added later without touching this file.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from clusternet_aa.sandbox.kubesim import bodies, defaults, negotiation, selectors, tables
from clusternet_aa.sandbox.kubesim.objects import ObjectService, not_found
from clusternet_aa.sandbox.kubesim.registry import Registry
from clusternet_aa.sandbox.kubesim.requestinfo import RequestInfo, parse_bool
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, ResourceInfo, UserInfo


@dataclass(kw_only=True)
class Call:
    """One resource request after authentication and authorization."""

    request: web.Request
    info: RequestInfo
    resource: ResourceInfo
    user: UserInfo
    warnings: list[str] = field(default_factory=list)

    @property
    def query(self) -> Any:
        return self.request.query

    @property
    def namespace(self) -> str:
        return self.info.namespace if self.resource.namespaced else ""


Handler = Callable[[Call], Awaitable[web.StreamResponse]]
#: A create-only resource (reviews, token requests): body -> answer object.
VirtualCreate = Callable[[Call, Obj], Awaitable[Obj]]
#: Field validation: (object, resource, mode, verb, patch body) -> warnings; raises in Strict.
FieldValidator = Callable[[Obj, ResourceInfo, str, str, Any], list[str]]
#: Drops fields the schema does not declare (CRD pruning; decoding into Go types for built-ins).
Pruner = Callable[[Obj, ResourceInfo], Obj]
#: Checks a custom resource against its CRD schema (422 Invalid).
SchemaValidator = Callable[[Obj, ResourceInfo], None]
#: Admission after validation: (call, object to be written) -> None, or raise a KubesimError.
Admitter = Callable[["Call", Obj], None]
#: managedFields bookkeeping: (existing or None, new, manager, resource, subresource) -> new.
ManagedFieldsRecorder = Callable[["Obj | None", Obj, str, ResourceInfo, str], Obj]
#: Patch appliers by media type: (current object or None, patch, call) -> patched object.
PatchApplier = Callable[["Obj | None", Any, Call], Obj]


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(
    call: Call | None,
    obj: Any,
    *,
    status: int = 200,
    content_type: str = negotiation.JSON,
) -> web.Response:
    response = web.Response(body=encode(obj), status=status, content_type="application/json")
    response.headers["Content-Type"] = content_type
    if call is not None:
        for warning in call.warnings:
            response.headers.add("Warning", f'299 - "{_escape_warning(warning)}"')
    return response


def _escape_warning(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dry_run(call: Call) -> bool:
    values = call.request.query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise KubesimError(
                400, "BadRequest", f'Invalid dryRun value: "{value}": supported values: "All"'
            )
    return bool(values)


def _field_validation(call: Call) -> str:
    mode = call.request.query.get("fieldValidation", "") or "Warn"
    if mode not in ("Strict", "Warn", "Ignore"):
        raise KubesimError(
            400,
            "BadRequest",
            f"fieldValidation parameter unsupported: {mode}. "
            "Supported values: Ignore, Warn, Strict",
        )
    return mode


@dataclass
class _Continue:
    rv: int
    after: tuple[str, str]


def _encode_continue(rv: int, after: tuple[str, str]) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(after)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> _Continue:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return _Continue(int(data["rv"]), (str(data["start"][0]), str(data["start"][1])))
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
        raise KubesimError(
            400,
            "BadRequest",
            "continue key is not valid: incorrect encoded start resourceVersion "
            "(version meta.k8s.io/v1)",
        ) from None


def _int_param(call: Call, name: str) -> int | None:
    value = call.request.query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise KubesimError(
            400, "BadRequest", f'invalid value "{value}" for parameter "{name}"'
        ) from None


class RestHandlers:
    """Resource requests of one server."""

    def __init__(self, service: ObjectService, registry: Registry) -> None:
        self.service = service
        self.registry = registry
        self.subresources: dict[tuple[str, str, str], Handler] = {}
        self.virtual: dict[tuple[str, str], VirtualCreate] = {}
        self.protobuf: bodies.ProtobufDecoder | None = None
        self.field_validator: FieldValidator | None = None
        self.pruner: Pruner | None = None
        self.schema_validator: SchemaValidator | None = None
        self.admitters: list[Admitter] = []
        self.patchers: dict[str, PatchApplier] = {}
        self.managed_fields: ManagedFieldsRecorder | None = None
        self.watch: Handler | None = None

    # -- dispatch ------------------------------------------------------------------------

    async def handle(self, call: Call) -> web.StreamResponse:
        info = call.info
        if info.subresource:
            handler = self.subresources.get(
                (call.resource.group, call.resource.resource, info.subresource)
            )
            if handler is None or info.subresource not in call.resource.subresources:
                raise KubesimError(
                    404, "NotFound", "the server could not find the requested resource"
                )
            return await handler(call)
        verb = info.verb
        if verb not in call.resource.verbs and not (
            verb == "watch" and "watch" in call.resource.verbs
        ):
            raise _method_not_allowed(call)
        if (call.resource.group, call.resource.resource) in self.virtual and verb == "create":
            return await self.create_virtual(call)
        if verb == "create":
            if info.name:
                raise _method_not_allowed(call)
            return await self.create(call)
        if verb == "get":
            return self.get(call)
        if verb == "list":
            return self.list(call)
        if verb == "watch":
            if self.watch is None:
                raise _method_not_allowed(call)
            return await self.watch(call)
        if verb == "update":
            return await self.update(call)
        if verb == "patch":
            return await self.patch(call)
        if verb == "delete":
            return await self.delete(call)
        if verb == "deletecollection":
            return await self.delete_collection(call)
        raise _method_not_allowed(call)

    # -- decoding helpers ----------------------------------------------------------------

    async def read_object(self, call: Call) -> Obj:
        body = await call.request.read()
        return bodies.decode_object(body, call.request.headers.get("Content-Type"), self.protobuf)

    def check_type_meta(self, call: Call, obj: Obj, *, expected_kind: str | None = None) -> None:
        """kind and apiVersion must name this resource's version.

        Missing ones are taken from the URL, as kube-apiserver's decoder does with its default
        group-version-kind (typed clients such as kubernetes_asyncio often omit them); ones that
        disagree with the URL are a 400.
        """
        resource = call.resource
        kind = expected_kind or resource.kind
        expected_version = resource.group_version
        if expected_kind == "Scale":
            expected_version = "autoscaling/v1"
        if not obj.get("kind"):
            obj["kind"] = kind
        if not obj.get("apiVersion"):
            obj["apiVersion"] = expected_version
        if obj["apiVersion"] != expected_version:
            raise KubesimError(
                400,
                "BadRequest",
                f"the API version in the data ({obj['apiVersion']}) does not match the expected "
                f"API version ({expected_version})",
            )
        if obj["kind"] != kind:
            raise KubesimError(
                400,
                "BadRequest",
                f"the kind in the data ({obj['kind']}) does not match the expected kind ({kind})",
            )
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise KubesimError(400, "BadRequest", "metadata must be an object")

    def check_namespace(self, call: Call, obj: Obj) -> None:
        meta = obj["metadata"]
        if not call.resource.namespaced:
            meta.pop("namespace", None)
            return
        body_ns = meta.get("namespace") or ""
        if body_ns and body_ns != call.info.namespace:
            raise KubesimError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the "
                "request",
            )
        meta["namespace"] = call.info.namespace

    def check_name(self, call: Call, obj: Obj) -> None:
        name = obj["metadata"].get("name") or ""
        if name != call.info.name:
            raise KubesimError(
                400,
                "BadRequest",
                f"the name of the object ({name}) does not match the name on the URL "
                f"({call.info.name})",
            )

    def validate(self, call: Call, obj: Obj, *, verb: str = "create", patch: Any = None) -> Obj:
        """Decoding normalization, fieldValidation (warnings or a Strict error), pruning, the CRD
        schema, then admission; before managedFields are recorded, as in kube."""
        defaults.convert_on_write(call.resource, obj)
        mode = _field_validation(call)
        if self.field_validator is not None:
            call.warnings.extend(self.field_validator(obj, call.resource, mode, verb, patch))
        if self.pruner is not None:
            obj = self.pruner(obj, call.resource)
        if self.schema_validator is not None:
            self.schema_validator(obj, call.resource)
        for admit in self.admitters:
            admit(call, obj)
        return obj

    def field_manager(self, call: Call) -> str:
        """``fieldManager``, else the User-Agent's product name, as kube-apiserver defaults it."""
        manager = call.request.query.get("fieldManager", "")
        if manager:
            if len(manager) > 128:
                raise KubesimError(
                    422,
                    "Invalid",
                    'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Too long: may not be '
                    "more than 128 bytes",
                )
            return str(manager)
        agent = call.request.headers.get("User-Agent", "")
        return agent.split("/", 1)[0][:128] or "unknown"

    def record(self, call: Call, existing: Obj | None, new: Obj) -> Obj:
        """``new`` with managedFields updated for a non-apply write."""
        if self.managed_fields is None:
            return new
        return self.managed_fields(
            existing, new, self.field_manager(call), call.resource, call.info.subresource
        )

    def respond_object(self, call: Call, obj: Obj, status: int = 200) -> web.Response:
        if negotiation.wants_table(call.request.headers.get("Accept", "")):
            return json_response(
                call,
                self.table(
                    call, [obj], {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
                ),
                status=status,
                content_type=negotiation.TABLE_V1,
            )
        return json_response(call, obj, status=status)

    def table(self, call: Call, objects: Iterable[Obj], list_meta: Obj) -> Obj:
        include = call.request.query.get("includeObject", "Metadata") or "Metadata"
        if include not in ("None", "Metadata", "Object"):
            raise KubesimError(
                400, "BadRequest", f"includeObject has an unsupported value: {include}"
            )
        return tables.table(
            call.resource,
            self.registry.printer_columns(call.resource),
            list(objects),
            include_object=include,
            list_meta=list_meta,
        )

    # -- verbs ---------------------------------------------------------------------------

    async def create(self, call: Call) -> web.Response:
        obj = await self.read_object(call)
        self.check_type_meta(call, obj)
        self.check_namespace(call, obj)
        dry_run = _dry_run(call)
        obj = self.validate(call, obj)
        obj = self.record(call, None, obj)
        created = self.service.create(call.resource, obj, dry_run=dry_run)
        return self.respond_object(call, created, status=201)

    async def create_virtual(self, call: Call) -> web.Response:
        obj = await self.read_object(call)
        self.check_type_meta(call, obj)
        if call.resource.namespaced:
            self.check_namespace(call, obj)
        answer = await self.virtual[(call.resource.group, call.resource.resource)](call, obj)
        return json_response(call, answer, status=201)

    def get(self, call: Call) -> web.Response:
        obj = self.service.get(call.resource, call.namespace, call.info.name)
        return self.respond_object(call, obj)

    def selectors(self, call: Call) -> tuple[selectors.LabelSelector, selectors.FieldSelector]:
        query = call.request.query
        label = selectors.parse_label_selector(query.get("labelSelector", ""))
        supported = selectors.selectable_fields(
            call.resource.group, call.resource.resource, namespaced=call.resource.namespaced
        )
        fields = selectors.parse_field_selector(query.get("fieldSelector", ""), supported)
        return label, fields

    def matching(self, call: Call) -> tuple[list[Obj], int]:
        label, fields = self.selectors(call)
        items, rv = self.service.list_objects(
            call.resource,
            call.info.namespace if call.resource.namespaced and call.info.namespace else None,
        )
        selected = [
            o
            for o in items
            if label.matches(o.get("metadata", {}).get("labels") or {}) and fields.matches(o)
        ]
        return selected, rv

    def list(self, call: Call) -> web.Response:
        items, rv = self.matching(call)
        limit = _int_param(call, "limit") or 0
        token = call.request.query.get("continue", "")
        list_rv = rv
        if token:
            position = _decode_continue(token)
            self.service.store.check_not_compacted(position.rv)
            list_rv = position.rv
            items = [
                o
                for o in items
                if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > position.after
            ]
        metadata: Obj = {"resourceVersion": str(list_rv)}
        if limit > 0 and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            last = items[-1]["metadata"]
            metadata["continue"] = _encode_continue(
                list_rv, (last.get("namespace", ""), last["name"])
            )
            metadata["remainingItemCount"] = remaining
        if negotiation.wants_table(call.request.headers.get("Accept", "")):
            return json_response(
                call, self.table(call, items, metadata), content_type=negotiation.TABLE_V1
            )
        body = {
            "kind": call.resource.list_kind,
            "apiVersion": call.resource.group_version,
            "metadata": metadata,
            "items": items,
        }
        return json_response(call, body)

    async def update(self, call: Call) -> web.Response:
        obj = await self.read_object(call)
        self.check_type_meta(call, obj)
        self.check_namespace(call, obj)
        self.check_name(call, obj)
        dry_run = _dry_run(call)
        obj = self.validate(call, obj, verb="update")
        existing = self.service.store.get(
            (call.resource.group, call.resource.resource), call.namespace, call.info.name
        )
        obj = self.record(call, existing, obj)
        result, created = self.service.update(call.resource, obj, dry_run=dry_run)
        return self.respond_object(call, result, status=201 if created else 200)

    async def apply_patch(self, call: Call, current: Obj | None) -> Obj:
        """The object a PATCH body turns ``current`` into (None: apply creating), validated."""
        body = await call.request.read()
        patch_type, patch = bodies.decode_patch(body, call.request.headers.get("Content-Type"))
        if patch_type == bodies.APPLY_PATCH:
            if not call.request.query.get("fieldManager"):
                raise KubesimError(
                    422,
                    "Invalid",
                    'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is '
                    "required for apply patch",
                )
        elif current is None:
            raise not_found(call.resource, call.info.name)
        patcher = self.patchers.get(patch_type)
        if patcher is None:
            raise KubesimError(
                415, "UnsupportedMediaType", f"the patch type {patch_type} is not supported"
            )
        patched = patcher(copy.deepcopy(current) if current is not None else None, patch, call)
        verb = "apply" if patch_type == bodies.APPLY_PATCH else "patch"
        if call.info.subresource == "scale":
            return patched  # a Scale, not an object of this resource
        return self.validate(call, patched, verb=verb, patch=patch)

    async def patch(self, call: Call) -> web.Response:
        resource = call.resource
        store_key = (resource.group, resource.resource)
        current = self.service.store.get(store_key, call.namespace, call.info.name)
        if current is not None:
            self.service.present(resource, current)
        patched = await self.apply_patch(call, current)
        self._check_patched(call, patched)
        dry_run = _dry_run(call)
        if bodies.media_type(call.request.headers.get("Content-Type")) != bodies.APPLY_PATCH:
            patched = self.record(call, current, patched)
        if current is None:
            patched["metadata"].pop("resourceVersion", None)
            created = self.service.create(resource, patched, dry_run=dry_run)
            return self.respond_object(call, created, status=201)
        result, _ = self.service.update(resource, patched, dry_run=dry_run, old=current)
        return self.respond_object(call, result)

    def _check_patched(self, call: Call, patched: Obj) -> None:
        if not isinstance(patched.get("metadata", {}), dict):
            raise KubesimError(400, "BadRequest", "the patched object is not a Kubernetes object")
        meta = patched.setdefault("metadata", {})
        patched.setdefault("apiVersion", call.resource.group_version)
        patched.setdefault("kind", call.resource.kind)
        self.check_type_meta(call, patched)
        if meta.get("name", call.info.name) != call.info.name:
            raise KubesimError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                f"({call.info.name})",
            )
        meta["name"] = call.info.name
        self.check_namespace(call, patched)

    async def read_delete_options(self, call: Call) -> Obj:
        body = await call.request.read()
        options = bodies.decode_options(
            body, call.request.headers.get("Content-Type"), self.protobuf
        )
        query = call.request.query
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "orphanDependents" in query:
            options["orphanDependents"] = parse_bool(query["orphanDependents"], "orphanDependents")
        if "dryRun" in query:
            options["dryRun"] = ["All"] if _dry_run(call) else []
        return options

    async def delete(self, call: Call) -> web.Response:
        options = await self.read_delete_options(call)
        dry_run = bool(options.get("dryRun"))
        obj, gone = self.service.delete(
            call.resource, call.namespace, call.info.name, options, dry_run=dry_run
        )
        if gone and (call.resource.group, call.resource.resource) != ("", "pods"):
            details: Obj = {
                "name": call.info.name,
                "kind": call.resource.resource,
                "uid": obj["metadata"].get("uid", ""),
            }
            if call.resource.group:
                details["group"] = call.resource.group
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }
            return json_response(call, status)
        return json_response(call, obj)

    async def delete_collection(self, call: Call) -> web.Response:
        options = await self.read_delete_options(call)
        dry_run = bool(options.get("dryRun"))
        items, _ = self.matching(call)
        deleted = []
        for item in items:
            meta = item["metadata"]
            try:
                obj, _ = self.service.delete(
                    call.resource, meta.get("namespace", ""), meta["name"], options, dry_run=dry_run
                )
            except KubesimError as e:
                if e.code == 404:
                    continue
                raise
            deleted.append(obj)
        body = {
            "kind": call.resource.list_kind,
            "apiVersion": call.resource.group_version,
            "metadata": {"resourceVersion": str(self.service.store.resource_version)},
            "items": deleted,
        }
        return json_response(call, body)


def _method_not_allowed(call: Call) -> KubesimError:
    return KubesimError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        details={"kind": call.resource.resource, "name": call.info.name}
        if call.info.name
        else {"kind": call.resource.resource},
    )
