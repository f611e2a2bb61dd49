"""RBAC escalation prevention: nobody grants permissions they do not hold themselves.

kube-apiserver's RBAC storage (``pkg/registry/rbac/*/policybased``) refuses to create or update

* a Role or ClusterRole whose rules are not all covered by the requester's own rules (in the
  request's namespace), unless the requester may ``escalate`` that role; a ClusterRole with an
  ``aggregationRule`` needs full authority (``*`` on ``*.*`` and every non-resource URL);
* a RoleBinding or ClusterRoleBinding whose referenced role grants anything the requester does
  not hold, unless the requester may ``bind`` that role.

``system:masters`` skips all of it, and an update that only touches ownerReferences or
finalizers (what the garbage collector writes) is not checked. Coverage is kube's
``validation.Covers``: each rule is broken down into single-verb, single-resource atoms and every
atom must be covered by one owner rule, ``*`` only by ``*``. Without this check a component that
creates RBAC objects with too little authority passes on kubesim and fails on a real cluster.

A binding's ``roleRef`` is immutable, as kube's validation enforces.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from clusternet_aa.sandbox.kubesim.rbac import (
    RBAC_GROUP,
    SYSTEM_MASTERS,
    RBACAuthorizer,
    aggregate_cluster_roles,
)
from clusternet_aa.sandbox.kubesim.types import (
    KubesimError,
    Obj,
    ObjectLister,
    RequestAttributes,
    ResourceInfo,
    UserInfo,
)

_ROLES = frozenset({"roles", "clusterroles"})
_BINDINGS = frozenset({"rolebindings", "clusterrolebindings"})
#: What a ClusterRole's aggregationRule requires: kube's ``fullAuthority``.
_FULL_AUTHORITY: list[Obj] = [
    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
    {"nonResourceURLs": ["*"], "verbs": ["*"]},
]


@dataclass(frozen=True)
class Atom:
    """One rule broken down: a single verb on one resource (or URL), maybe one name."""

    verb: str
    group: str = ""
    resource: str = ""
    name: str = ""
    url: str = ""


def breakdown(rule: Obj) -> list[Atom]:
    """kube's ``BreakdownRule``."""
    verbs = _strings(rule, "verbs")
    names = _strings(rule, "resourceNames") or [""]
    atoms = [
        Atom(verb=verb, group=group, resource=resource, name=name)
        for group in _strings(rule, "apiGroups")
        for resource in _strings(rule, "resources")
        for verb in verbs
        for name in names
    ]
    atoms += [
        Atom(verb=verb, url=url) for url in _strings(rule, "nonResourceURLs") for verb in verbs
    ]
    return atoms


def covers(owner: Obj, atom: Atom) -> bool:
    """kube's ``ruleCovers`` for one atom: ``*`` in the atom is covered only by ``*``."""
    verbs = _strings(owner, "verbs")
    if "*" not in verbs and atom.verb not in verbs:
        return False
    if atom.url:
        return any(_url_covers(pattern, atom.url) for pattern in _strings(owner, "nonResourceURLs"))
    groups = _strings(owner, "apiGroups")
    if "*" not in groups and atom.group not in groups:
        return False
    if not _resource_covers(_strings(owner, "resources"), atom.resource):
        return False
    owner_names = _strings(owner, "resourceNames")
    return not owner_names or (bool(atom.name) and atom.name in owner_names)


def uncovered(owner_rules: Sequence[Obj], rules: Sequence[Obj]) -> list[Atom]:
    """The atoms of ``rules`` no owner rule covers (kube's ``Covers``), in order."""
    missing: list[Atom] = []
    for rule in rules:
        for atom in breakdown(rule):
            if atom not in missing and not any(covers(owner, atom) for owner in owner_rules):
                missing.append(atom)
    return missing


class EscalationCheck:
    """Checks writes of RBAC objects against the requester's own permissions."""

    def __init__(self, lister: ObjectLister, authorizer: RBACAuthorizer) -> None:
        self._lister = lister
        self._authorizer = authorizer

    def check(
        self,
        user: UserInfo,
        resource: ResourceInfo,
        namespace: str,
        name: str,
        new: Obj,
        old: Obj | None,
    ) -> None:
        """Raise 403 (or 422 for a changed roleRef) if writing ``new`` would escalate."""
        if resource.group != RBAC_GROUP:
            return
        changed_ref = old is not None and new.get("roleRef") != old.get("roleRef")
        if resource.resource in _BINDINGS and changed_ref:
            raise _role_ref_changed(resource, name, new)
        if resource.resource not in _ROLES | _BINDINGS or SYSTEM_MASTERS in user.groups:
            return
        if old is not None and _only_gc_fields_changed(new, old):
            return
        namespace = namespace if resource.namespaced else ""
        if resource.resource in _ROLES:
            self._check_role(user, resource, namespace, name, new)
        else:
            self._check_binding(user, resource, namespace, new)

    def _check_role(
        self, user: UserInfo, resource: ResourceInfo, namespace: str, name: str, new: Obj
    ) -> None:
        if self._allowed(user, "escalate", resource.resource, namespace, name):
            return
        obj_name = str(new.get("metadata", {}).get("name", name))
        self._confirm(user, resource, namespace, obj_name, list(new.get("rules") or []))
        if resource.resource == "clusterroles" and new.get("aggregationRule"):
            owner_rules, _ = self._owner_rules(user, namespace)
            if uncovered(owner_rules, _FULL_AUTHORITY):
                raise _forbidden(
                    resource,
                    obj_name,
                    "must have cluster-admin privileges to use the aggregationRule",
                )

    def _check_binding(
        self, user: UserInfo, resource: ResourceInfo, namespace: str, new: Obj
    ) -> None:
        ref = new.get("roleRef") or {}
        kind, role_name = ref.get("kind"), str(ref.get("name", ""))
        role_resource = {"ClusterRole": "clusterroles", "Role": "roles"}.get(str(kind))
        if role_resource is not None and self._allowed(
            user, "bind", role_resource, namespace, role_name
        ):
            return
        rules = self._role_rules(str(kind), role_name, namespace)
        obj_name = str(new.get("metadata", {}).get("name", ""))
        self._confirm(user, resource, namespace, obj_name, rules)

    def _confirm(
        self, user: UserInfo, resource: ResourceInfo, namespace: str, name: str, rules: list[Obj]
    ) -> None:
        """kube's ``ConfirmNoEscalation``."""
        owner_rules, errors = self._owner_rules(user, namespace)
        missing = uncovered(owner_rules, rules)
        if not missing:
            return
        message = (
            f"user {_go_quote(user.name)} (groups={_go_quote_list(user.groups)}) is attempting "
            f"to grant RBAC permissions not currently held:\n{_describe(missing)}"
        )
        if errors:
            message += f"; resolution errors: [{' '.join(errors)}]"
        raise _forbidden(resource, name, message)

    def _allowed(self, user: UserInfo, verb: str, resource: str, namespace: str, name: str) -> bool:
        attrs = RequestAttributes(
            user=user,
            verb=verb,
            is_resource_request=True,
            api_group=RBAC_GROUP,
            api_version="*",
            resource=resource,
            namespace=namespace,
            name=name,
        )
        return self._authorizer.authorize(attrs).allowed

    def _owner_rules(self, user: UserInfo, namespace: str) -> tuple[list[Obj], list[str]]:
        """The requester's rules in ``namespace`` (cluster-wide ones included), as PolicyRules."""
        resource_rules, non_resource_rules, errors = self._authorizer.rules_and_errors_for(
            user, namespace
        )
        rules: list[Obj] = [r.to_json() for r in resource_rules]
        rules += [r.to_json() for r in non_resource_rules]
        return rules, errors

    def _role_rules(self, kind: str, name: str, namespace: str) -> list[Obj]:
        """The rules a roleRef grants (aggregated for a ClusterRole); 404 when it is missing."""
        if kind == "ClusterRole":
            cluster_roles = list(self._lister(RBAC_GROUP, "clusterroles", None))
            aggregated = aggregate_cluster_roles(cluster_roles)
            for role in cluster_roles:
                if role.get("metadata", {}).get("name") == name:
                    if name in aggregated:
                        return list(aggregated[name])
                    return list(role.get("rules") or [])
            raise _not_found("clusterroles", name)
        for role in self._lister(RBAC_GROUP, "roles", namespace):
            if role.get("metadata", {}).get("name") == name:
                return list(role.get("rules") or [])
        raise _not_found("roles", name)


def _strings(rule: Obj, key: str) -> list[str]:
    return [str(v) for v in rule.get(key) or []]


def _url_covers(pattern: str, url: str) -> bool:
    if pattern == url:
        return True
    return pattern.endswith("*") and url.startswith(pattern.rstrip("*"))


def _resource_covers(owned: list[str], resource: str) -> bool:
    if "*" in owned or resource in owned:
        return True
    if "/" not in resource:
        return False
    return "*/" + resource.split("/", 1)[1] in owned


def _only_gc_fields_changed(new: Obj, old: Obj) -> bool:
    """kube's ``IsOnlyMutatingGCFields``: ownerReferences and finalizers may always change."""
    clone = copy.deepcopy(new)
    meta = clone.setdefault("metadata", {})
    old_meta = old.get("metadata", {})
    for key in ("ownerReferences", "finalizers", "managedFields", "resourceVersion"):
        if key in old_meta:
            meta[key] = old_meta[key]
        else:
            meta.pop(key, None)
    clone["apiVersion"], clone["kind"] = old.get("apiVersion"), old.get("kind")
    return bool(clone == old)


def _describe(atoms: list[Atom]) -> str:
    """kube's ``rulesToString``: verbs of one group/resource/name merged, lines sorted."""
    merged: dict[tuple[str, str, str, str], list[str]] = {}
    for atom in atoms:
        merged.setdefault((atom.group, atom.resource, atom.name, atom.url), []).append(atom.verb)
    lines = []
    for (group, resource, name, url), verbs in merged.items():
        parts = []
        if url:
            parts.append(f"NonResourceURLs:{_go_quote_list([url])}")
        else:
            parts.append(f"APIGroups:{_go_quote_list([group])}")
            parts.append(f"Resources:{_go_quote_list([resource])}")
            if name:
                parts.append(f"ResourceNames:{_go_quote_list([name])}")
        parts.append(f"Verbs:{_go_quote_list(verbs)}")
        lines.append("{" + ", ".join(parts) + "}")
    return "\n".join(sorted(lines))


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _go_quote_list(items: Sequence[str]) -> str:
    """Go's ``%q`` of a ``[]string``: ``["a" "b"]``."""
    return "[" + " ".join(_go_quote(i) for i in items) + "]"


def _forbidden(resource: ResourceInfo, name: str, why: str) -> KubesimError:
    kind = f"{resource.resource}.{resource.group}"
    return KubesimError(
        403,
        "Forbidden",
        f'{kind} "{name}" is forbidden: {why}',
        details={"name": name, "group": resource.group, "kind": resource.resource},
    )


def _not_found(resource: str, name: str) -> KubesimError:
    return KubesimError(
        404,
        "NotFound",
        f'{resource}.{RBAC_GROUP} "{name}" not found',
        details={"name": name, "group": RBAC_GROUP, "kind": resource},
    )


def _role_ref_changed(resource: ResourceInfo, name: str, new: Obj) -> KubesimError:
    kind = {"rolebindings": "RoleBinding", "clusterrolebindings": "ClusterRoleBinding"}
    ref = new.get("roleRef") or {}
    value = (
        f"rbac.RoleRef{{APIGroup:{_go_quote(str(ref.get('apiGroup', '')))}, "
        f"Kind:{_go_quote(str(ref.get('kind', '')))}, Name:{_go_quote(str(ref.get('name', '')))}}}"
    )
    message = (
        f'{kind[resource.resource]}.{RBAC_GROUP} "{name}" is invalid: roleRef: Invalid value: '
        f"{value}: cannot change roleRef"
    )
    return KubesimError(
        422,
        "Invalid",
        message,
        details={
            "name": name,
            "group": RBAC_GROUP,
            "kind": kind[resource.resource],
            "causes": [
                {
                    "reason": "FieldValueInvalid",
                    "message": f"Invalid value: {value}: cannot change roleRef",
                    "field": "roleRef",
                }
            ],
        },
    )
