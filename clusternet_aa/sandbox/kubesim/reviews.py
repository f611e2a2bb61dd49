"""TokenReview, SubjectAccessReview and friends, answered from kubesim's own authn and RBAC.

These are kube's ``create``-only review resources: the body is validated as kube validates it
(422 Invalid with kube's field messages, 400 BadRequest where kube's REST storage says so), then
answered from the same :class:`Authenticator` and :class:`RBACAuthorizer` that guard requests, so
``kubectl auth can-i`` and a hub's delegated authentication see what kubesim enforces.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from clusternet_aa.sandbox.kubesim.authn import AuthenticationError, Authenticator
from clusternet_aa.sandbox.kubesim.rbac import RBACAuthorizer
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, RequestAttributes, UserInfo

AUTHENTICATION_V1 = "authentication.k8s.io/v1"
AUTHORIZATION_V1 = "authorization.k8s.io/v1"


def _bad_request(message: str) -> KubesimError:
    return KubesimError(400, "BadRequest", message)


def _check_kind(review: Obj, kind: str, api_version: str) -> Obj:
    """The review as a deep copy, after kube's decoder checks of kind and apiVersion."""
    if not isinstance(review, dict):
        raise _bad_request(f"not a {kind}")
    if review.get("kind", kind) != kind:
        raise _bad_request(f"not a {kind}: {review.get('kind')}")
    if review.get("apiVersion", api_version) != api_version:
        raise _bad_request(f"unsupported apiVersion {review.get('apiVersion')!r} for {kind}")
    out = copy.deepcopy(review)
    out["kind"] = kind
    out["apiVersion"] = api_version
    if not isinstance(out.get("spec", {}), dict) or not isinstance(out.get("metadata", {}), dict):
        raise _bad_request(f"{kind}: spec and metadata must be objects")
    out.setdefault("metadata", {})
    out.setdefault("spec", {})
    return out


def _field_error(field: str, value: Any, detail: str) -> tuple[str, str]:
    return field, f"Invalid value: {json.dumps(value)}: {detail}"


def _invalid(kind: str, group: str, name: str, errors: Sequence[tuple[str, str]]) -> KubesimError:
    """kube's ``errors.NewInvalid``: one message for all field errors, and their causes."""
    messages = [f"{field}: {body}" for field, body in errors]
    joined = messages[0] if len(messages) == 1 else f"[{', '.join(messages)}]"
    return KubesimError(
        422,
        "Invalid",
        f'{kind}.{group} "{name}" is invalid: {joined}',
        details={
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [
                {"reason": "FieldValueInvalid", "message": body, "field": field}
                for field, body in errors
            ],
        },
    )


def _metadata_is_empty(metadata: Mapping[str, Any]) -> bool:
    """kube requires a review's ObjectMeta to be empty (managedFields aside)."""
    return all(
        value in (None, "", {}, [], 0) for key, value in metadata.items() if key != "managedFields"
    )


def review_token(review: Obj, authenticator: Authenticator, *, namespace: str | None = None) -> Obj:
    """Answer a TokenReview (authentication.k8s.io/v1) as kube's tokenreview REST storage.

    An invalid token is not an error: ``status.authenticated`` is false and ``status.error``
    says why. A token valid for none of ``spec.audiences`` is the same.
    """
    out = _check_kind(review, "TokenReview", AUTHENTICATION_V1)
    if namespace:
        raise _bad_request(f"namespace is not allowed on this type: {namespace}")
    spec = out["spec"]
    token = spec.get("token")
    if not isinstance(token, str) or not token:
        raise _bad_request("token is required for TokenReview in authentication")
    audiences = [str(a) for a in spec.get("audiences") or []]
    status: Obj = {"authenticated": False, "user": {}}
    try:
        result = authenticator.authenticate_token(token, audiences=audiences)
    except AuthenticationError as e:
        status["error"] = str(e)
    else:
        user = result.user
        status["authenticated"] = True
        status["user"] = _user_json(user)
        status["audiences"] = list(result.audiences)
    out["status"] = status
    return out


def _user_json(user: UserInfo) -> Obj:
    body: Obj = {"username": user.name}
    if user.uid:
        body["uid"] = user.uid
    if user.groups:
        body["groups"] = list(user.groups)
    if user.extra:
        body["extra"] = {key: list(values) for key, values in user.extra.items()}
    return body


def _validate_access_spec(spec: Mapping[str, Any], *, need_subject: bool) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    resource = spec.get("resourceAttributes")
    non_resource = spec.get("nonResourceAttributes")
    if resource is not None and non_resource is not None:
        errors.append(
            _field_error(
                "spec.nonResourceAttributes",
                non_resource,
                "cannot be specified in combination with resourceAttributes",
            )
        )
    if resource is None and non_resource is None:
        errors.append(
            _field_error(
                "spec.resourceAttributes",
                None,
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )
        )
    if need_subject and not spec.get("user") and not spec.get("groups"):
        errors.append(
            _field_error(
                "spec.user", spec.get("user", ""), "at least one of user or group must be specified"
            )
        )
    for key, value in (("resourceAttributes", resource), ("nonResourceAttributes", non_resource)):
        if value is not None and not isinstance(value, dict):
            errors.append(_field_error(f"spec.{key}", value, "must be an object"))
    return errors


def _attributes(spec: Mapping[str, Any], user: UserInfo) -> RequestAttributes:
    """kube's ``AuthorizationAttributesFrom``: the review's attributes as a request's."""
    resource = spec.get("resourceAttributes")
    if isinstance(resource, dict):
        return RequestAttributes(
            user=user,
            verb=str(resource.get("verb", "")),
            is_resource_request=True,
            api_group=str(resource.get("group", "")),
            api_version=str(resource.get("version") or "*"),
            resource=str(resource.get("resource", "")),
            subresource=str(resource.get("subresource", "")),
            namespace=str(resource.get("namespace", "")),
            name=str(resource.get("name", "")),
        )
    non_resource = spec.get("nonResourceAttributes") or {}
    return RequestAttributes(
        user=user,
        verb=str(non_resource.get("verb", "")),
        is_resource_request=False,
        path=str(non_resource.get("path", "")),
    )


def _decide(out: Obj, attrs: RequestAttributes, authorizer: RBACAuthorizer) -> Obj:
    decision = authorizer.authorize(attrs)
    status: Obj = {"allowed": decision.allowed}
    if decision.reason:
        status["reason"] = decision.reason
    out["status"] = status
    return out


def _spec_user(spec: Mapping[str, Any]) -> UserInfo:
    extra = spec.get("extra") or {}
    if not isinstance(extra, dict):
        raise _bad_request("spec.extra must be an object")
    return UserInfo(
        name=str(spec.get("user", "")),
        uid=str(spec.get("uid", "")),
        groups=tuple(str(g) for g in spec.get("groups") or []),
        extra={str(k): tuple(str(v) for v in values or []) for k, values in extra.items()},
    )


def review_subject_access(review: Obj, authorizer: RBACAuthorizer) -> Obj:
    """Answer a SubjectAccessReview (authorization.k8s.io/v1) for the user in its spec.

    As in kube, the spec's groups are taken as given (no ``system:authenticated`` is added) and
    ``status.denied`` stays false, since RBAC never denies: it allows or has no opinion.
    """
    out = _check_kind(review, "SubjectAccessReview", AUTHORIZATION_V1)
    spec = out["spec"]
    errors = _validate_access_spec(spec, need_subject=True)
    if not _metadata_is_empty(out["metadata"]):
        errors.append(_field_error("metadata", out["metadata"], "must be empty"))
    if errors:
        raise _invalid("SubjectAccessReview", "authorization.k8s.io", "", errors)
    return _decide(out, _attributes(spec, _spec_user(spec)), authorizer)


def review_local_subject_access(review: Obj, namespace: str, authorizer: RBACAuthorizer) -> Obj:
    """Answer a LocalSubjectAccessReview posted to ``namespaces/<namespace>``."""
    out = _check_kind(review, "LocalSubjectAccessReview", AUTHORIZATION_V1)
    spec = out["spec"]
    errors = _validate_access_spec(spec, need_subject=True)
    if spec.get("nonResourceAttributes") is not None:
        errors.append(
            _field_error(
                "spec.nonResourceAttributes",
                spec["nonResourceAttributes"],
                "disallowed on this kind of request",
            )
        )
    meta = out["metadata"]
    if not _metadata_is_empty({k: v for k, v in meta.items() if k != "namespace"}):
        errors.append(_field_error("metadata", meta, "must be empty except for namespace"))
    if errors:
        raise _invalid("LocalSubjectAccessReview", "authorization.k8s.io", "", errors)
    if meta.get("namespace") and meta["namespace"] != namespace:
        raise _bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    attributes = spec.get("resourceAttributes") or {}
    if attributes.get("namespace", "") != namespace:
        raise _bad_request(f"spec.resourceAttributes.namespace must match namespace: {namespace}")
    return _decide(out, _attributes(spec, _spec_user(spec)), authorizer)


def review_self_subject_access(review: Obj, user: UserInfo, authorizer: RBACAuthorizer) -> Obj:
    """Answer a SelfSubjectAccessReview for the (authenticated, maybe impersonated) caller."""
    out = _check_kind(review, "SelfSubjectAccessReview", AUTHORIZATION_V1)
    spec = out["spec"]
    errors = _validate_access_spec(spec, need_subject=False)
    if not _metadata_is_empty(out["metadata"]):
        errors.append(_field_error("metadata", out["metadata"], "must be empty"))
    if errors:
        raise _invalid("SelfSubjectAccessReview", "authorization.k8s.io", "", errors)
    return _decide(out, _attributes(spec, user), authorizer)


def review_self_subject_rules(review: Obj, user: UserInfo, authorizer: RBACAuthorizer) -> Obj:
    """Answer a SelfSubjectRulesReview: the caller's RBAC rules in ``spec.namespace``.

    kube answers with the status only (the spec is not echoed) and reports missing roles in
    ``status.evaluationError``.
    """
    out = _check_kind(review, "SelfSubjectRulesReview", AUTHORIZATION_V1)
    namespace = out["spec"].get("namespace") or ""
    if not namespace:
        raise _bad_request("no namespace on request")
    resource_rules, non_resource_rules, errors = authorizer.rules_and_errors_for(user, namespace)
    status: Obj = {
        "resourceRules": [rule.to_json() for rule in resource_rules],
        "nonResourceRules": [rule.to_json() for rule in non_resource_rules],
        "incomplete": False,
    }
    if errors:
        unique = list(dict.fromkeys(errors))
        status["evaluationError"] = unique[0] if len(unique) == 1 else f"[{', '.join(unique)}]"
    return {
        "kind": "SelfSubjectRulesReview",
        "apiVersion": AUTHORIZATION_V1,
        "metadata": {"creationTimestamp": None},
        "spec": {},
        "status": status,
    }


def review_self_subject(user: UserInfo) -> Obj:
    """Answer a SelfSubjectReview (``kubectl auth whoami``): the caller's identity."""
    return {
        "kind": "SelfSubjectReview",
        "apiVersion": AUTHENTICATION_V1,
        "metadata": {"creationTimestamp": None},
        "status": {"userInfo": _user_json(user)},
    }
