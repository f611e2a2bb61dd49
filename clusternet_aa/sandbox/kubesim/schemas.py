"""The built-in Kubernetes schemas, taken from the ``kubernetes-validate`` package.

We do not write the built-in schemas ourselves: kubernetes-validate ships the JSON Schema
definitions generated from the Kubernetes OpenAPI documents, with the ``x-kubernetes-*``
extensions (group-version-kind, patch merge keys and strategies, list types) intact. OpenAPI
documents, strategic merge patch and validation all read them through this module.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

#: The schema set we serve; kubectl 1.37 is the client we test with.
KUBERNETES_SCHEMA_VERSION = "v1.37.0-local"

#: A JSON Schema definition, keyed by its Go-style name (``io.k8s.api.core.v1.Pod``).
Definition = dict[str, Any]


@functools.cache
def definitions() -> dict[str, Definition]:
    """All definitions of the pinned schema version, keyed by name (loaded once, ~10 MB)."""
    root = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    text = root.joinpath(KUBERNETES_SCHEMA_VERSION, "_definitions.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    defs: dict[str, Definition] = document["$defs"]
    return defs


@functools.cache
def _names_by_gvk() -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, definition in definitions().items():
        for gvk in definition.get("x-kubernetes-group-version-kind", ()):
            index[(gvk["group"], gvk["version"], gvk["kind"])] = name
    return index


def definition_name(group: str, version: str, kind: str) -> str | None:
    """The definition name of a built-in kind, or None when the kind is not built in.

    Some definitions (``DeleteOptions``, ``WatchEvent``) list many group-versions; the index keeps
    one name per (group, version, kind), which is all callers need.
    """
    return _names_by_gvk().get((group, version, kind))


def resolve_ref(ref: str) -> Definition:
    """The definition a ``$ref`` (``#/$defs/<name>``) points at; KeyError when unknown."""
    return definitions()[ref.rsplit("/", 1)[-1]]
