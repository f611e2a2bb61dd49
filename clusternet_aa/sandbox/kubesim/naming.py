"""Object metadata checks kube-apiserver applies to every write: names, labels, generateName.

The failures are ``422 Invalid`` Status bodies with ``details.causes``, shaped as kube-apiserver
shapes them, because clients (kubectl's error printer, controllers' retry logic) read them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence

from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, ResourceInfo

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
#: kube's ``utilrand.String`` alphabet: no vowels, no confusable characters.
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)

Cause = tuple[str, str, str]  # field, reason, message


def invalid(info: ResourceInfo, name: str, causes: Sequence[Cause]) -> KubesimError:
    """kube's ``errors.NewInvalid``: ``<Kind>[.<group>] "<name>" is invalid: <field>: <why>``."""
    detail = ", ".join(f"{f}: {m}" for f, _, m in causes)
    if len(causes) > 1:
        detail = "[" + detail + "]"
    details: Obj = {
        "name": name,
        "kind": info.kind,
        "causes": [{"reason": r, "message": m, "field": f} for f, r, m in causes],
    }
    if info.group:
        details["group"] = info.group
    qualified = f"{info.kind}.{info.group}" if info.group else info.kind
    return KubesimError(
        422, "Invalid", f'{qualified} "{name}" is invalid: {detail}', details=details
    )


def generate_name(prefix: str) -> str:
    """``generateName`` + 5 random characters, as kube's SimpleNameGenerator."""
    return prefix[: 63 - 5] + "".join(secrets.choice(_ALPHABET) for _ in range(5))


def _name_problem(info: ResourceInfo, name: str) -> str | None:
    if (info.group, info.resource) == ("", "namespaces"):
        if len(name) > 63:
            return "must be no more than 63 characters"
        return None if _DNS1123_LABEL.fullmatch(name) else _LABEL_MSG
    if (info.group, info.resource) == ("", "services"):
        if len(name) > 63:
            return "must be no more than 63 characters"
        return None if _DNS1035_LABEL.fullmatch(name) else _DNS1035_MSG
    if info.group == "rbac.authorization.k8s.io":
        if name in (".", ".."):
            return f"may not be '{name}'"
        if "/" in name or "%" in name:
            return "may not contain '/'" if "/" in name else "may not contain '%'"
        return None
    if len(name) > 253:
        return "must be no more than 253 characters"
    return None if _DNS1123_SUBDOMAIN.fullmatch(name) else _SUBDOMAIN_MSG


def _label_problems(labels: object) -> list[Cause]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [("metadata.labels", "FieldValueInvalid", "must be a map of strings")]
    causes: list[Cause] = []
    for key, value in labels.items():
        prefix, _, short = str(key).rpartition("/")
        if (prefix and not _DNS1123_SUBDOMAIN.fullmatch(prefix)) or not (
            _QUALIFIED_NAME.fullmatch(short) and len(short) <= 63
        ):
            causes.append(
                (
                    "metadata.labels",
                    "FieldValueInvalid",
                    f'Invalid value: "{key}": name part must consist of alphanumeric characters, '
                    "'-', '_' or '.', and must start and end with an alphanumeric character",
                )
            )
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            causes.append(
                (
                    "metadata.labels",
                    "FieldValueInvalid",
                    f'Invalid value: "{value}": a valid label must be an empty string or consist '
                    "of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                    "alphanumeric character",
                )
            )
    return causes


def validate_metadata(info: ResourceInfo, obj: Obj) -> None:
    """Raise 422 for a bad name or bad labels."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    causes: list[Cause] = []
    if not name:
        causes.append(
            (
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            )
        )
    else:
        problem = _name_problem(info, name)
        if problem is not None:
            causes.append(
                ("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {problem}')
            )
    causes.extend(_label_problems(meta.get("labels")))
    annotations = meta.get("annotations")
    if annotations is not None and (
        not isinstance(annotations, dict)
        or not all(isinstance(v, str) for v in annotations.values())
    ):
        causes.append(("metadata.annotations", "FieldValueInvalid", "must be a map of strings"))
    if causes:
        raise invalid(info, name, causes)
