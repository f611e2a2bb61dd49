"""Plugging the feature modules (auth, reviews, tokens, patching, OpenAPI, protobuf) into a server.

Each feature module is pure logic with a small public API; this module adapts those APIs to the
server's extension points (virtual create resources, subresource handlers, patch appliers,
controllers, non-resource paths), so the server itself stays a pipeline.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from clusternet_aa.sandbox.kubesim import (
    bodies,
    builtin_validation,
    openapi,
    openapi_proto,
    patching,
    protobuf,
    reviews,
    tokens,
    validation,
)
from clusternet_aa.sandbox.kubesim.rbac_escalation import EscalationCheck
from clusternet_aa.sandbox.kubesim.requestinfo import parse_bool
from clusternet_aa.sandbox.kubesim.rest import Call, json_response
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, ResourceInfo, UserInfo

if TYPE_CHECKING:
    from clusternet_aa.sandbox.kubesim.server import KubesimServer

_SECRETS = ("", "secrets")
_SERVICE_ACCOUNTS = ("", "serviceaccounts")
_CONFIGMAPS = ("", "configmaps")
_NAMESPACES = ("", "namespaces")
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"


def wire_auth(server: KubesimServer) -> None:
    """Reviews, TokenRequest, token Secrets, RBAC escalation checks, and the per-namespace
    ServiceAccount and CA."""
    authn, authz = server.authenticator, server.authorizer

    async def token_review(call: Call, body: Obj) -> Obj:
        return reviews.review_token(body, authn)

    async def subject_access(call: Call, body: Obj) -> Obj:
        return reviews.review_subject_access(body, authz)

    async def local_subject_access(call: Call, body: Obj) -> Obj:
        return reviews.review_local_subject_access(body, call.info.namespace, authz)

    async def self_subject_access(call: Call, body: Obj) -> Obj:
        return reviews.review_self_subject_access(body, call.user, authz)

    async def self_subject_rules(call: Call, body: Obj) -> Obj:
        return reviews.review_self_subject_rules(body, call.user, authz)

    async def self_subject(call: Call, body: Obj) -> Obj:
        return reviews.review_self_subject(call.user)

    virtual = server.rest.virtual
    virtual[("authentication.k8s.io", "tokenreviews")] = token_review
    virtual[("authentication.k8s.io", "selfsubjectreviews")] = self_subject
    virtual[("authorization.k8s.io", "subjectaccessreviews")] = subject_access
    virtual[("authorization.k8s.io", "localsubjectaccessreviews")] = local_subject_access
    virtual[("authorization.k8s.io", "selfsubjectaccessreviews")] = self_subject_access
    virtual[("authorization.k8s.io", "selfsubjectrulesreviews")] = self_subject_rules

    async def token_request(call: Call) -> web.StreamResponse:
        if call.info.verb != "create":
            raise KubesimError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        service_account = server.service.get(call.resource, call.namespace, call.info.name)
        body = await server.rest.read_object(call)
        answer = tokens.issue_token_request(
            service_account, body, signer=server.signer, lister=server.lister
        )
        return json_response(call, answer, status=201)

    server.rest.subresources[("", "serviceaccounts", "token")] = token_request
    escalation = EscalationCheck(server.lister, authz)

    def no_escalation(call: Call, obj: Obj) -> None:
        old = server.store.get(
            (call.resource.group, call.resource.resource), call.namespace, call.info.name
        )
        escalation.check(call.user, call.resource, call.namespace, call.info.name, obj, old)

    server.rest.admitters.append(no_escalation)
    server.rest.protobuf = protobuf.decode_protobuf
    server.controllers.extra.append(lambda: _namespace_defaults(server))
    server.controllers.extra.append(lambda: _token_secrets(server))


def _namespace_defaults(server: KubesimServer) -> None:
    """What kube-controller-manager adds to every namespace: ``default`` SA and the root CA."""
    store, service = server.store, server.service
    sa_info = server.registry.lookup("", "v1", "serviceaccounts")
    cm_info = server.registry.lookup("", "v1", "configmaps")
    assert sa_info is not None
    assert cm_info is not None
    ca = server.ca_pem.decode()
    for ns in list(store.iter_refs(_NAMESPACES)):
        meta = ns["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        name = str(meta["name"])
        if store.get(_SERVICE_ACCOUNTS, name, "default") is None:
            service.create(
                sa_info,
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "default", "namespace": name},
                },
            )
        current = store.get(_CONFIGMAPS, name, ROOT_CA_CONFIGMAP)
        wanted = {"ca.crt": ca}
        if current is None:
            service.create(
                cm_info,
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": ROOT_CA_CONFIGMAP,
                        "namespace": name,
                        "annotations": {
                            "kubernetes.io/description": "Contains a CA bundle that can be used "
                            "to verify the kube-apiserver when using internal endpoints such as "
                            "the internal service IP or kubernetes.default.svc. No other usage "
                            "is guaranteed across distributions of Kubernetes clusters."
                        },
                    },
                    "data": wanted,
                },
            )
        elif current.get("data") != wanted:
            current["data"] = wanted
            service.update(cm_info, current)


def _token_secrets(server: KubesimServer) -> None:
    """kube's token controller: fill ``kubernetes.io/service-account-token`` Secrets."""
    store = server.store
    info = server.registry.lookup("", "v1", "secrets")
    assert info is not None
    for secret in list(store.iter_refs(_SECRETS)):
        if secret.get("type") != tokens.SA_TOKEN_SECRET_TYPE:
            continue
        meta = secret["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        annotations = meta.get("annotations") or {}
        sa_name = annotations.get(tokens.SA_NAME_ANNOTATION)
        if not sa_name:
            continue
        service_account = store.get(_SERVICE_ACCOUNTS, meta.get("namespace", ""), sa_name)
        if service_account is None:
            continue
        try:
            filled = tokens.fill_service_account_token_secret(
                copy.deepcopy(secret),
                service_account=service_account,
                signer=server.signer,
                ca_pem=server.ca_pem,
            )
        except ValueError:
            continue  # kube's controller would delete such a Secret; we leave it unfilled
        if filled != secret:
            server.service.update(info, filled)


def wire_patching(server: KubesimServer) -> None:
    """Patch appliers (merge, JSON, strategic, server-side apply), managedFields, and the
    validation of written objects."""
    rest = server.rest

    def merge(current: Obj | None, patch: Any, call: Call) -> Obj:
        assert current is not None
        return patching.apply_merge_patch(current, patch)

    def json_patch(current: Obj | None, patch: Any, call: Call) -> Obj:
        assert current is not None
        return patching.apply_json_patch(current, patch)

    def strategic(current: Obj | None, patch: Any, call: Call) -> Obj:
        assert current is not None
        return patching.apply_strategic_merge_patch(current, patch, call.resource)

    def apply(current: Obj | None, patch: Any, call: Call) -> Obj:
        force = call.request.query.get("force", "")
        return patching.apply_server_side(
            current,
            patch,
            manager=rest.field_manager(call),
            force=bool(force) and parse_bool(force, "force"),
            resource=call.resource,
            subresource=call.info.subresource,
        )

    rest.patchers[bodies.MERGE_PATCH] = merge
    rest.patchers[bodies.JSON_PATCH] = json_patch
    rest.patchers[bodies.STRATEGIC_PATCH] = strategic
    rest.patchers[bodies.APPLY_PATCH] = apply

    def record(
        existing: Obj | None, new: Obj, manager: str, resource: ResourceInfo, subresource: str
    ) -> Obj:
        try:
            return patching.record_update(
                existing, new, manager=manager, resource=resource, subresource=subresource
            )
        except KubesimError:
            # kube's fieldmanager.UpdateNoErrors: an object its type converter rejects (a list
            # element without its key) is still written, with managedFields removed.
            (new.get("metadata") or {}).pop("managedFields", None)
            return new

    rest.managed_fields = record

    def fields(obj: Obj, resource: ResourceInfo, mode: str, verb: str, patch: Any) -> list[str]:
        return validation.validate_fields(obj, resource, mode=mode, verb=verb, patch=patch)

    rest.field_validator = fields

    def builtin(call: Call, obj: Obj) -> None:
        if not call.info.subresource:
            builtin_validation.validate_builtin(obj, call.resource)

    rest.admitters.append(builtin)
    rest.pruner = validation.prune
    rest.schema_validator = validation.validate_schema


def wire_openapi(server: KubesimServer) -> None:
    """``/openapi/v2`` (JSON, or protobuf when asked) and ``/openapi/v3`` (index and per
    group-version, JSON)."""
    cache = openapi.OpenAPICache()

    def respond(document: openapi.CachedDocument) -> web.Response:
        response = web.Response(body=document.body, content_type="application/json")
        response.headers["ETag"] = f'"{document.hash}"'
        return response

    protobuf: dict[str, bytes] = {}

    async def v2(request: web.Request, user: UserInfo) -> web.StreamResponse:
        document = cache.v2(server.registry.version, server.registry.all())
        if not openapi_proto.wants_protobuf(request.headers.get("Accept", "")):
            return respond(document)
        if document.hash not in protobuf:
            protobuf.clear()
            protobuf[document.hash] = openapi_proto.encode_document(json.loads(document.body))
        response = web.Response(body=protobuf[document.hash])
        response.headers["Content-Type"] = openapi_proto.OPENAPI_V2_PROTOBUF
        response.headers["ETag"] = f'"{document.hash}-protobuf"'
        return response

    async def v3_index(request: web.Request, user: UserInfo) -> web.StreamResponse:
        return respond(cache.v3_index(server.registry.version, server.registry.all()))

    async def v3(request: web.Request, user: UserInfo) -> web.StreamResponse:
        document = cache.v3(server.registry.version, server.registry.all(), request.path)
        if document is None:
            raise KubesimError(404, "NotFound", "the server could not find the requested resource")
        return respond(document)

    server.non_resource["/openapi/v2"] = v2
    server.non_resource["/openapi/v3"] = v3_index
    server.non_resource_prefixes["/openapi/v3/"] = v3
