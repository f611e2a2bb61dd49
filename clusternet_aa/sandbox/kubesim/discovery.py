"""Discovery documents: /version, /api, /apis, /apis/<g>, /apis/<g>/<v>, and aggregated v2.

These drive kubectl's RESTMapper and ``kubectl api-resources``, so they follow kube-apiserver's
shapes to the field: ``groupVersion`` is exactly ``v1`` or ``<g>/<v>``, resources and
subresources are sorted by name, subresources with another kind (``deployments/scale``) carry
``group``/``version``. kubectl 1.37 asks for aggregated discovery (``apidiscovery.k8s.io/v2``)
first; serving it saves one request per group-version on every command.
"""

from __future__ import annotations

from clusternet_aa.sandbox.kubesim.registry import Registry, subresource_info
from clusternet_aa.sandbox.kubesim.types import Obj, ResourceInfo


def version_info(git_version: str) -> Obj:
    """``/version``: kubectl reads major/minor for its skew warning."""
    core = git_version.lstrip("v").split("-", 1)[0].split("+", 1)[0]
    parts = ([*core.split("."), "0", "0"])[:2]
    return {
        "major": parts[0],
        "minor": parts[1],
        "emulationMajor": parts[0],
        "emulationMinor": parts[1],
        "minCompatibilityMajor": parts[0],
        "minCompatibilityMinor": parts[1],
        "gitVersion": git_version,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "kubesim",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> Obj:
    """``/api`` (legacy form)."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group(name: str, versions: list[str]) -> Obj:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: Registry) -> Obj:
    """``/apis`` (legacy form): every named group with its versions, preferred first."""
    groups = [_group(g, vs) for g, vs in registry.group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> Obj | None:
    versions = registry.group_versions().get(group)
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


def _resource_entry(info: ResourceInfo) -> Obj:
    entry: Obj = {
        "name": info.resource,
        "singularName": info.singular,
        "namespaced": info.namespaced,
        "kind": info.kind,
        "verbs": list(info.verbs),
    }
    if info.short_names:
        entry["shortNames"] = list(info.short_names)
    if info.categories:
        entry["categories"] = list(info.categories)
    return entry


def api_resource_list(registry: Registry, group: str, version: str) -> Obj | None:
    """``/api/v1`` or ``/apis/<g>/<v>``; None when the group-version is not served."""
    infos = registry.resources_of(group, version)
    if not infos:
        return None
    resources: list[Obj] = []
    for info in infos:
        resources.append(_resource_entry(info))
        for sub in info.subresources:
            described = subresource_info(info, sub)
            entry: Obj = {
                "name": f"{info.resource}/{sub}",
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": described.kind,
                "verbs": list(described.verbs),
            }
            if (described.group, described.version) != (info.group, info.version):
                entry["group"] = described.group
                entry["version"] = described.version
            resources.append(entry)
    resources.sort(key=lambda r: str(r["name"]))
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _aggregated_resource(info: ResourceInfo) -> Obj:
    entry: Obj = {
        "resource": info.resource,
        "responseKind": {"group": info.group, "version": info.version, "kind": info.kind},
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "singularResource": info.singular,
        "verbs": list(info.verbs),
    }
    if info.short_names:
        entry["shortNames"] = list(info.short_names)
    if info.categories:
        entry["categories"] = list(info.categories)
    subresources = []
    for sub in sorted(info.subresources):
        described = subresource_info(info, sub)
        subresources.append(
            {
                "subresource": sub,
                "responseKind": {
                    "group": described.group,
                    "version": described.version,
                    "kind": described.kind,
                },
                "verbs": list(described.verbs),
            }
        )
    if subresources:
        entry["subresources"] = subresources
    return entry


def aggregated(registry: Registry, *, legacy: bool) -> Obj:
    """``/api`` (legacy=True) or ``/apis`` as an ``apidiscovery.k8s.io/v2`` group list."""
    items = []
    for group, versions in registry.group_versions().items():
        if (group == "") != legacy:
            continue
        version_entries = []
        for version in versions:
            infos = sorted(registry.resources_of(group, version), key=lambda i: i.resource)
            version_entries.append(
                {
                    "version": version,
                    "resources": [_aggregated_resource(i) for i in infos],
                    "freshness": "Current",
                }
            )
        metadata: Obj = {"name": group} if group else {}
        metadata["creationTimestamp"] = None
        items.append({"metadata": metadata, "versions": version_entries})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }
