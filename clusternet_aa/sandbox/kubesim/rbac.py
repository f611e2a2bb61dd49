"""RBAC authorization, evaluated from the stored Role, ClusterRole and binding objects.

This follows kube's ``plugin/pkg/auth/authorizer/rbac``: ClusterRoleBindings grant their
ClusterRole everywhere; RoleBindings grant a Role or ClusterRole inside their namespace; a
request is allowed as soon as one rule of one applicable binding matches. RBAC never denies, it
only allows or has no opinion; kube-apiserver's union of authorizers then refuses. Members of
``system:masters`` are allowed everything before RBAC is asked, as kube's privileged-group
authorizer does.

Aggregated ClusterRoles (``aggregationRule``) are resolved at read time: the authorizer uses the
union of the selected roles' rules, which is what kube's aggregation controller writes into the
role. :func:`aggregate_cluster_roles` computes the same rules so that a controller can persist
them, and ``kubectl get clusterrole -o yaml`` shows what kube would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clusternet_aa.sandbox.kubesim.types import (
    Decision,
    Obj,
    ObjectLister,
    RequestAttributes,
    UserInfo,
)

RBAC_GROUP = "rbac.authorization.k8s.io"
SYSTEM_MASTERS = "system:masters"
SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class ResourceRule:
    """A rule as SelfSubjectRulesReview reports it (``status.resourceRules[]``)."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    resource_names: tuple[str, ...]

    def to_json(self) -> Obj:
        out: Obj = {"verbs": list(self.verbs)}
        if self.api_groups:
            out["apiGroups"] = list(self.api_groups)
        if self.resources:
            out["resources"] = list(self.resources)
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        return out


@dataclass(frozen=True)
class NonResourceRule:
    """A rule as SelfSubjectRulesReview reports it (``status.nonResourceRules[]``)."""

    verbs: tuple[str, ...]
    non_resource_urls: tuple[str, ...]

    def to_json(self) -> Obj:
        out: Obj = {"verbs": list(self.verbs)}
        if self.non_resource_urls:
            out["nonResourceURLs"] = list(self.non_resource_urls)
        return out


def _strings(rule: Mapping[str, Any], key: str) -> list[str]:
    value = rule.get(key) or []
    return [str(v) for v in value] if isinstance(value, list) else []


def rule_allows(attrs: RequestAttributes, rule: Mapping[str, Any]) -> bool:
    """kube's ``RuleAllows``: does one PolicyRule cover the request?

    Resources match exactly, by ``*``, or by ``*/<subresource>``; ``<resource>/*`` is *not* a
    wildcard in kube and matches nothing but itself. Non-resource URLs match exactly, by ``*``,
    or by a prefix ending in ``*``.
    """
    verbs = _strings(rule, "verbs")
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if not attrs.is_resource_request:
        for url in _strings(rule, "nonResourceURLs"):
            if url == "*" or url == attrs.path:
                return True
            if url.endswith("*") and attrs.path.startswith(url[:-1]):
                return True
        return False
    groups = _strings(rule, "apiGroups")
    if "*" not in groups and attrs.api_group not in groups:
        return False
    if not _resource_matches(_strings(rule, "resources"), attrs.resource, attrs.subresource):
        return False
    names = _strings(rule, "resourceNames")
    return not names or attrs.name in names


def _resource_matches(resources: Sequence[str], resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for candidate in resources:
        if candidate in ("*", combined):
            return True
        if subresource and candidate == f"*/{subresource}":
            return True
    return False


def _selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels and matchExpressions) against an object's labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, operator = expr.get("key", ""), expr.get("operator", "")
        values = expr.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def _name(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def aggregate_cluster_roles(cluster_roles: Sequence[Obj]) -> dict[str, list[Obj]]:
    """The rules kube's aggregation controller gives each ClusterRole with an aggregationRule.

    For every selector in order, the matching ClusterRoles (other than the role itself) are
    taken by name, and their rules appended unless an equal rule is already there. Selected
    roles that are themselves aggregated contribute their aggregated rules (the fixpoint the
    controller reaches after its resyncs).
    """
    by_name = {_name(role): role for role in cluster_roles}
    resolved: dict[str, list[Obj]] = {}

    def rules_of(name: str, visiting: frozenset[str]) -> list[Obj]:
        role = by_name[name]
        aggregation = role.get("aggregationRule")
        if not isinstance(aggregation, dict) or name in visiting:
            return list(role.get("rules") or [])
        if name in resolved:
            return resolved[name]
        rules: list[Obj] = []
        for selector in aggregation.get("clusterRoleSelectors") or []:
            for other in sorted(by_name):
                if other == name:
                    continue
                labels = by_name[other].get("metadata", {}).get("labels") or {}
                if not _selector_matches(selector, labels):
                    continue
                for rule in rules_of(other, visiting | {name}):
                    if rule not in rules:
                        rules.append(rule)
        resolved[name] = rules
        return rules

    return {
        name: rules_of(name, frozenset())
        for name, role in by_name.items()
        if isinstance(role.get("aggregationRule"), dict)
    }


def _subject_applies(
    user_name: str, groups: Sequence[str], subject: Mapping[str, Any], namespace: str
) -> bool:
    """kube's ``appliesToUser``; a ServiceAccount subject's namespace defaults to the binding's."""
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return bool(user_name == name)
    if kind == "Group":
        return name in groups
    if kind == "ServiceAccount":
        sa_namespace = subject.get("namespace") or namespace
        if not sa_namespace:
            return False
        return user_name == f"{SA_PREFIX}{sa_namespace}:{name}"
    return False


def _describe_subject(subject: Mapping[str, Any], binding_namespace: str) -> str:
    kind, name = subject.get("kind", ""), subject.get("name", "")
    if kind == "ServiceAccount":
        return f'{kind} "{name}/{subject.get("namespace") or binding_namespace}"'
    return f'{kind} "{name}"'


#: Resolves a binding's roleRef (in the binding's namespace) to rules, or None when missing.
_RoleRules = Callable[[Mapping[str, Any], str], "list[Obj] | None"]


@dataclass(frozen=True)
class _Grant:
    """One rule reached through one binding, with kube's description of where it came from."""

    rule: Mapping[str, Any]
    source: str


class RBACAuthorizer:
    """kube's RBAC authorizer (plus the system:masters short-circuit) over stored objects."""

    def __init__(self, lister: ObjectLister) -> None:
        self._lister = lister

    def authorize(self, attrs: RequestAttributes) -> Decision:
        """Allowed with kube's "RBAC: allowed by ..." reason, or not, with errors as the reason."""
        if SYSTEM_MASTERS in attrs.user.groups:
            return Decision(True, "")
        errors: list[str] = []
        for grant in self._visit(attrs.user.name, attrs.user.groups, attrs.namespace, errors):
            if rule_allows(attrs, grant.rule):
                return Decision(True, f"RBAC: allowed by {grant.source}")
        if not errors:
            return Decision(False, "")
        unique = list(dict.fromkeys(errors))
        joined = unique[0] if len(unique) == 1 else f"[{', '.join(unique)}]"
        return Decision(False, f"RBAC: {joined}")

    def __call__(self, attrs: RequestAttributes) -> Decision:
        return self.authorize(attrs)

    def rules_for(
        self, user: UserInfo, namespace: str
    ) -> tuple[list[ResourceRule], list[NonResourceRule]]:
        """What SelfSubjectRulesReview lists for ``user`` (a UserInfo) in ``namespace``."""
        resource_rules, non_resource_rules, _ = self.rules_and_errors_for(user, namespace)
        return resource_rules, non_resource_rules

    def rules_and_errors_for(
        self, user: UserInfo, namespace: str
    ) -> tuple[list[ResourceRule], list[NonResourceRule], list[str]]:
        """As :meth:`rules_for`, plus the resolution errors (missing roles) kube reports."""
        errors: list[str] = []
        resource_rules: list[ResourceRule] = []
        non_resource_rules: list[NonResourceRule] = []
        for grant in self._visit(user.name, user.groups, namespace, errors):
            rule = grant.rule
            verbs = tuple(_strings(rule, "verbs"))
            if _strings(rule, "resources"):
                resource_rules.append(
                    ResourceRule(
                        verbs=verbs,
                        api_groups=tuple(_strings(rule, "apiGroups")),
                        resources=tuple(_strings(rule, "resources")),
                        resource_names=tuple(_strings(rule, "resourceNames")),
                    )
                )
            if _strings(rule, "nonResourceURLs"):
                non_resource_rules.append(
                    NonResourceRule(
                        verbs=verbs, non_resource_urls=tuple(_strings(rule, "nonResourceURLs"))
                    )
                )
        return resource_rules, non_resource_rules, errors

    def _visit(
        self, user_name: str, groups: Sequence[str], namespace: str, errors: list[str]
    ) -> Iterator[_Grant]:
        """kube's ``VisitRulesFor``: cluster bindings first, then the namespace's bindings."""
        cluster_roles = list(self._lister(RBAC_GROUP, "clusterroles", None))
        aggregated = aggregate_cluster_roles(cluster_roles)
        roles_by_name = {_name(role): role for role in cluster_roles}

        def role_rules(ref: Mapping[str, Any], binding_namespace: str) -> list[Obj] | None:
            kind, name = ref.get("kind"), str(ref.get("name", ""))
            if kind == "ClusterRole":
                if name not in roles_by_name:
                    errors.append(f'clusterrole.{RBAC_GROUP} "{name}" not found')
                    return None
                if name in aggregated:
                    return aggregated[name]
                return list(roles_by_name[name].get("rules") or [])
            if kind == "Role":
                for role in self._lister(RBAC_GROUP, "roles", binding_namespace):
                    if _name(role) == name:
                        return list(role.get("rules") or [])
                errors.append(f'role.{RBAC_GROUP} "{name}" not found')
                return None
            errors.append(f'unsupported role reference kind: "{kind}"')
            return None

        for binding in self._lister(RBAC_GROUP, "clusterrolebindings", None):
            yield from self._binding_grants(binding, "", user_name, groups, role_rules)
        if namespace:
            for binding in self._lister(RBAC_GROUP, "rolebindings", namespace):
                yield from self._binding_grants(binding, namespace, user_name, groups, role_rules)

    @staticmethod
    def _binding_grants(
        binding: Obj,
        namespace: str,
        user_name: str,
        groups: Sequence[str],
        role_rules: _RoleRules,
    ) -> Iterator[_Grant]:
        subject = next(
            (
                s
                for s in binding.get("subjects") or []
                if _subject_applies(user_name, groups, s, namespace)
            ),
            None,
        )
        if subject is None:
            return
        ref = binding.get("roleRef") or {}
        rules = role_rules(ref, namespace)
        if rules is None:
            return
        if namespace:
            source = (
                f'RoleBinding "{_name(binding)}/{namespace}" of {ref.get("kind")} '
                f'"{ref.get("name")}" to {_describe_subject(subject, namespace)}'
            )
        else:
            source = (
                f'ClusterRoleBinding "{_name(binding)}" of {ref.get("kind")} '
                f'"{ref.get("name")}" to {_describe_subject(subject, "")}'
            )
        for rule in rules:
            yield _Grant(rule, source)


_BOOTSTRAP_META = {
    "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
}


def _cluster_role(name: str, rules: list[Obj]) -> Obj:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, **_BOOTSTRAP_META},
        "rules": rules,
    }


def _cluster_role_binding(name: str, groups: Sequence[str]) -> Obj:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, **_BOOTSTRAP_META},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": g} for g in groups],
    }


def bootstrap_policy() -> list[Obj]:
    """kube-apiserver's default ClusterRoles and ClusterRoleBindings that any client relies on.

    ``cluster-admin`` for ``system:masters``; ``system:discovery``, ``system:basic-user`` (which
    lets every authenticated user run ``kubectl auth can-i``) and ``system:public-info-viewer``.
    The aggregated ``admin``/``edit``/``view`` roles and controller roles are not included.
    """
    public_urls = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
    discovery_urls = ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"]
    return [
        _cluster_role(
            "cluster-admin",
            [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        ),
        _cluster_role(
            "system:discovery",
            [{"nonResourceURLs": sorted(discovery_urls + public_urls), "verbs": ["get"]}],
        ),
        _cluster_role(
            "system:basic-user",
            [
                {
                    "apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"],
                },
                {
                    "apiGroups": ["authentication.k8s.io"],
                    "resources": ["selfsubjectreviews"],
                    "verbs": ["create"],
                },
            ],
        ),
        _cluster_role(
            "system:public-info-viewer", [{"nonResourceURLs": public_urls, "verbs": ["get"]}]
        ),
        _cluster_role_binding("cluster-admin", [SYSTEM_MASTERS]),
        _cluster_role_binding("system:discovery", ["system:authenticated"]),
        _cluster_role_binding("system:basic-user", ["system:authenticated"]),
        _cluster_role_binding(
            "system:public-info-viewer", ["system:authenticated", "system:unauthenticated"]
        ),
    ]
