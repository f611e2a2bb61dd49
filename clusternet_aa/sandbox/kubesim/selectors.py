"""Label and field selectors, parsed and matched the way kube-apiserver does.

The label parser is a port of ``k8s.io/apimachinery/pkg/labels/selector.go`` (its lexer, its
recursive-descent parser and its error strings), and the field parser of
``k8s.io/apimachinery/pkg/fields/selector.go``. The messages matter: clients show them verbatim
(``kubectl get -l 'a b'`` prints the server's ``unable to parse requirement: ...``), and a test
double that accepts a selector kube-apiserver rejects hides bugs in the code under test.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj

__all__ = [
    "FIELD_SETS",
    "FieldSelector",
    "LabelSelector",
    "Requirement",
    "escape_field_value",
    "field_value",
    "label_selector_from_dict",
    "parse_field_selector",
    "parse_label_selector",
    "selectable_fields",
    "validate_label_value",
    "validate_qualified_name",
]


class SelectorError(ValueError):
    """A parse failure, carrying kube's error text (the caller wraps it into a Status)."""


# --- Name and value syntax (k8s.io/apimachinery/pkg/util/validation) -------------------------

_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_RE = re.compile(_QNAME_FMT)
_QNAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_VALUE_FMT = f"({_QNAME_FMT})?"
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character"
)
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character"
)


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    """validation.RegexError, double spaces included (``'MyName',  or 'my.name'``)."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    msg += " (e.g. "
    for i, example in enumerate(examples):
        if i > 0:
            msg += " or "
        msg += f"'{example}', "
    return msg + f"regex used for validation is '{fmt}')"


def _max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def _is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append(_max_len_error(253))
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errs.append(_regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def validate_qualified_name(value: str) -> list[str]:
    """validation.IsQualifiedName: ``[prefix/]name``, the syntax of label and annotation keys."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in _is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + _max_len_error(63))
    if not _QNAME_RE.fullmatch(name):
        errs.append(
            "name part " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def validate_label_value(value: str) -> list[str]:
    """validation.IsValidLabelValue."""
    errs = []
    if len(value) > 63:
        errs.append(_max_len_error(63))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(
            _regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")
        )
    return errs


def _go_quote(value: str) -> str:
    """Go's ``%q`` for the ASCII-printable strings selectors are made of."""
    out = []
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _go_string_slice(values: Iterable[str]) -> str:
    """Go's ``%#v`` of a ``[]string``, as field.Invalid prints a bad value list."""
    return "[]string{" + ", ".join(_go_quote(v) for v in values) + "}"


def _invalid(path: str, bad_value: str, detail: str) -> str:
    """field.Invalid(...).Error(): ``<path>: Invalid value: <value>: <detail>``."""
    return f"{path}: Invalid value: {bad_value}: {detail}"


# --- Label selectors -------------------------------------------------------------------------


class Operator(StrEnum):
    """selection.Operator values (the strings are kube's, used by ``String()``)."""

    DOES_NOT_EXIST = "!"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    IN = "in"
    NOT_EQUALS = "!="
    NOT_IN = "notin"
    EXISTS = "exists"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector: ``key op values``."""

    key: str
    operator: Operator
    values: tuple[str, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        """labels.Requirement.Matches."""
        op = self.operator
        has = self.key in labels
        if op in (Operator.IN, Operator.EQUALS, Operator.DOUBLE_EQUALS):
            return has and labels[self.key] in self.values
        if op in (Operator.NOT_IN, Operator.NOT_EQUALS):
            return not has or labels[self.key] not in self.values
        if op is Operator.EXISTS:
            return has
        if op is Operator.DOES_NOT_EXIST:
            return not has
        # Gt / Lt: the label must exist and parse as an int64.
        if not has:
            return False
        try:
            label_value = _parse_int64(labels[self.key])
        except ValueError:
            return False
        bound = _parse_int64(self.values[0])
        return label_value > bound if op is Operator.GREATER_THAN else label_value < bound

    def __str__(self) -> str:
        """labels.Requirement.String: the canonical text kube prints and re-parses."""
        op = self.operator
        if op is Operator.DOES_NOT_EXIST:
            return "!" + self.key
        if op is Operator.EXISTS:
            return self.key
        symbol = {
            Operator.EQUALS: "=",
            Operator.DOUBLE_EQUALS: "==",
            Operator.NOT_EQUALS: "!=",
            Operator.IN: " in ",
            Operator.NOT_IN: " notin ",
            Operator.GREATER_THAN: ">",
            Operator.LESS_THAN: "<",
        }[op]
        if op in (Operator.IN, Operator.NOT_IN):
            return f"{self.key}{symbol}({','.join(sorted(self.values))})"
        return f"{self.key}{symbol}{self.values[0]}"


_INT64_RE = re.compile(r"[+-]?[0-9]+")


def _parse_int64(text: str) -> int:
    """strconv.ParseInt(text, 10, 64)."""
    if not _INT64_RE.fullmatch(text):
        raise ValueError(text)
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise ValueError(text)
    return value


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements; ``nothing`` is labels.Nothing() (a nil LabelSelector)."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        """True when the selector selects everything."""
        return not self.nothing and not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def new_requirement(key: str, op: Operator, values: Iterable[str], path: str = "") -> Requirement:
    """labels.NewRequirement: validates the key, the value count and every value.

    ``path`` prefixes the field paths of the error (``key``, ``values[0][k]``) as kube's
    ``field.WithPath`` does; an empty path gives the bare names, as ``labels.Parse`` does.
    """
    vals = list(values)
    prefix = f"{path}." if path else ""
    errs: list[str] = []
    key_errs = validate_qualified_name(key)
    if key_errs:
        errs.append(_invalid(prefix + "key", _go_quote(key), "; ".join(key_errs)))
    values_path = prefix + "values"
    if op in (Operator.IN, Operator.NOT_IN):
        if not vals:
            errs.append(
                _invalid(
                    values_path,
                    _go_string_slice(vals),
                    "for 'in', 'notin' operators, values set can't be empty",
                )
            )
    elif op in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS):
        if len(vals) != 1:
            errs.append(
                _invalid(
                    values_path,
                    _go_string_slice(vals),
                    "exact-match compatibility requires one single value",
                )
            )
    elif op in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        if vals:
            errs.append(
                _invalid(
                    values_path,
                    _go_string_slice(vals),
                    "values set must be empty for exists and does not exist",
                )
            )
    else:
        if len(vals) != 1:
            errs.append(
                _invalid(
                    values_path,
                    _go_string_slice(vals),
                    "for 'Gt', 'Lt' operators, exactly one value is required",
                )
            )
        for i, v in enumerate(vals):
            try:
                _parse_int64(v)
            except ValueError:
                errs.append(
                    _invalid(
                        f"{values_path}[{i}]",
                        _go_quote(v),
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    )
                )
    for i, v in enumerate(vals):
        value_errs = validate_label_value(v)
        if value_errs:
            errs.append(_invalid(f"{values_path}[{i}][{key}]", _go_quote(v), "; ".join(value_errs)))
    if errs:
        raise SelectorError(_aggregate(errs))
    return Requirement(key, op, tuple(vals))


def _aggregate(errs: list[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): one message, or ``[a, b]`` with duplicates dropped."""
    unique = list(dict.fromkeys(errs))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


class _Tok(Enum):
    ERROR = 0
    EOS = 1
    CLOSED_PAR = 2
    COMMA = 3
    DOES_NOT_EXIST = 4
    DOUBLE_EQUALS = 5
    EQUALS = 6
    GREATER_THAN = 7
    IDENTIFIER = 8
    IN = 9
    LESS_THAN = 10
    NOT_EQUALS = 11
    NOT_IN = 12
    OPEN_PAR = 13


_STRING_TO_TOKEN = {
    ")": _Tok.CLOSED_PAR,
    ",": _Tok.COMMA,
    "!": _Tok.DOES_NOT_EXIST,
    "==": _Tok.DOUBLE_EQUALS,
    "=": _Tok.EQUALS,
    ">": _Tok.GREATER_THAN,
    "in": _Tok.IN,
    "<": _Tok.LESS_THAN,
    "!=": _Tok.NOT_EQUALS,
    "notin": _Tok.NOT_IN,
    "(": _Tok.OPEN_PAR,
}
_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")


def _lex(text: str) -> list[tuple[_Tok, str]]:
    """The labels.Lexer, run to the end of the string (labels.Parser.scan)."""
    items: list[tuple[_Tok, str]] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= n:
            items.append((_Tok.EOS, ""))
            return items
        if text[pos] in _SPECIAL:
            last: tuple[_Tok, str] | None = None
            buffer = ""
            while pos < n and text[pos] in _SPECIAL:
                buffer += text[pos]
                pos += 1
                token = _STRING_TO_TOKEN.get(buffer)
                if token is not None:
                    last = (token, buffer)
                elif last is not None:
                    pos -= 1
                    break
            if last is None:
                items.append((_Tok.ERROR, f"error expected: keyword found '{buffer}'"))
            else:
                items.append(last)
        else:
            start = pos
            while pos < n and text[pos] not in _SPECIAL and text[pos] not in _WHITESPACE:
                pos += 1
            word = text[start:pos]
            items.append((_STRING_TO_TOKEN.get(word, _Tok.IDENTIFIER), word))


class _Parser:
    """labels.Parser, with its two contexts: in ``values`` context ``in``/``notin`` are names."""

    def __init__(self, text: str) -> None:
        self.items = _lex(text)
        self.position = 0

    def lookahead(self, values: bool = True) -> tuple[_Tok, str]:
        return self._contextual(self.items[self.position], values)

    def consume(self, values: bool = True) -> tuple[_Tok, str]:
        item = self.items[self.position]
        self.position += 1
        return self._contextual(item, values)

    @staticmethod
    def _contextual(item: tuple[_Tok, str], values: bool) -> tuple[_Tok, str]:
        tok, lit = item
        if values and tok in (_Tok.IN, _Tok.NOT_IN):
            tok = _Tok.IDENTIFIER
        return tok, lit

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            tok, lit = self.lookahead()
            if tok in (_Tok.IDENTIFIER, _Tok.DOES_NOT_EXIST):
                try:
                    requirements.append(self.parse_requirement())
                except SelectorError as e:
                    raise SelectorError(f"unable to parse requirement: {e}") from None
                t, lit = self.consume()
                if t is _Tok.EOS:
                    return requirements
                if t is _Tok.COMMA:
                    t2, lit2 = self.lookahead()
                    if t2 not in (_Tok.IDENTIFIER, _Tok.DOES_NOT_EXIST):
                        raise SelectorError(f"found '{lit2}', expected: identifier after ','")
                else:
                    raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
            elif tok is _Tok.EOS:
                return requirements
            else:
                raise SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def parse_requirement(self) -> Requirement:
        key, operator = self.parse_key_and_infer_operator()
        if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
            return new_requirement(key, operator, ())
        operator = self.parse_operator()
        if operator in (Operator.IN, Operator.NOT_IN):
            values = self.parse_values()
        else:
            values = self.parse_exact_value()
        return new_requirement(key, operator, sorted(values))

    def parse_key_and_infer_operator(self) -> tuple[str, Operator | None]:
        operator: Operator | None = None
        tok, literal = self.consume()
        if tok is _Tok.DOES_NOT_EXIST:
            operator = Operator.DOES_NOT_EXIST
            tok, literal = self.consume()
        if tok is not _Tok.IDENTIFIER:
            raise SelectorError(f"found '{literal}', expected: identifier")
        key_errs = validate_qualified_name(literal)
        if key_errs:
            # labels.Parse has no field path: field.Path(nil).String() is "<nil>".
            raise SelectorError(_invalid("<nil>", _go_quote(literal), "; ".join(key_errs)))
        t, _ = self.lookahead()
        if t in (_Tok.EOS, _Tok.COMMA) and operator is not Operator.DOES_NOT_EXIST:
            operator = Operator.EXISTS
        return literal, operator

    def parse_operator(self) -> Operator:
        tok, lit = self.consume(values=False)
        operator = {
            _Tok.IN: Operator.IN,
            _Tok.EQUALS: Operator.EQUALS,
            _Tok.DOUBLE_EQUALS: Operator.DOUBLE_EQUALS,
            _Tok.GREATER_THAN: Operator.GREATER_THAN,
            _Tok.LESS_THAN: Operator.LESS_THAN,
            _Tok.NOT_IN: Operator.NOT_IN,
            _Tok.NOT_EQUALS: Operator.NOT_EQUALS,
        }.get(tok)
        if operator is None:
            raise SelectorError(f"found '{lit}', expected: '=', '!=', '==', 'in', notin'")
        return operator

    def parse_values(self) -> set[str]:
        tok, lit = self.consume()
        if tok is not _Tok.OPEN_PAR:
            raise SelectorError(f"found '{lit}' expected: '('")
        tok, lit = self.lookahead()
        if tok in (_Tok.IDENTIFIER, _Tok.COMMA):
            values = self.parse_identifiers_list()
            tok, _ = self.consume()
            if tok is not _Tok.CLOSED_PAR:
                raise SelectorError(f"found '{lit}', expected: ')'")
            return values
        if tok is _Tok.CLOSED_PAR:
            self.consume()
            return {""}
        raise SelectorError(f"found '{lit}', expected: ',', ')' or identifier")

    def parse_identifiers_list(self) -> set[str]:
        values: set[str] = set()
        while True:
            tok, lit = self.consume()
            if tok is _Tok.IDENTIFIER:
                values.add(lit)
                tok2, lit2 = self.lookahead()
                if tok2 is _Tok.COMMA:
                    continue
                if tok2 is _Tok.CLOSED_PAR:
                    return values
                raise SelectorError(f"found '{lit2}', expected: ',' or ')'")
            if tok is _Tok.COMMA:
                if not values:
                    values.add("")
                tok2, _ = self.lookahead()
                if tok2 is _Tok.CLOSED_PAR:
                    values.add("")
                    return values
                if tok2 is _Tok.COMMA:
                    self.consume()
                    values.add("")
            else:
                raise SelectorError(f"found '{lit}', expected: ',', or identifier")

    def parse_exact_value(self) -> set[str]:
        tok, _ = self.lookahead()
        if tok in (_Tok.EOS, _Tok.COMMA):
            return {""}
        tok, lit = self.consume()
        if tok is _Tok.IDENTIFIER:
            return {lit}
        raise SelectorError(f"found '{lit}', expected: identifier")


def parse_label_selector(text: str) -> LabelSelector:
    """labels.Parse; a syntax error is a 400 BadRequest carrying kube's message.

    The requirements are sorted by key (stable), as kube sorts them, so ``str()`` gives kube's
    canonical form.
    """
    try:
        requirements = _Parser(text).parse()
    except SelectorError as e:
        raise KubesimError(400, "BadRequest", str(e)) from None
    requirements.sort(key=lambda r: r.key)
    return LabelSelector(tuple(requirements))


_LABEL_SELECTOR_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}


def label_selector_from_dict(sel: Obj | None) -> LabelSelector:
    """metav1.LabelSelectorAsSelector: None selects nothing, ``{}`` selects everything.

    Invalid selectors (bad keys, values or operators) are 400 BadRequest with kube's message;
    callers that validate a stored object may rather report them as 422 Invalid.
    """
    if sel is None:
        return LabelSelector(nothing=True)
    match_labels: Mapping[str, Any] = sel.get("matchLabels") or {}
    match_expressions: list[Any] = sel.get("matchExpressions") or []
    requirements: list[Requirement] = []
    try:
        for key, value in match_labels.items():
            requirements.append(new_requirement(key, Operator.EQUALS, [str(value)]))
        for expr in match_expressions:
            op_name = expr.get("operator", "")
            op = _LABEL_SELECTOR_OPERATORS.get(op_name)
            if op is None:
                raise SelectorError(f'"{op_name}" is not a valid label selector operator')
            values = [str(v) for v in expr.get("values") or []]
            requirements.append(new_requirement(str(expr.get("key", "")), op, values))
    except SelectorError as e:
        raise KubesimError(400, "BadRequest", str(e)) from None
    requirements.sort(key=lambda r: r.key)
    return LabelSelector(tuple(requirements))


# --- Field selectors -------------------------------------------------------------------------


def _hostnetwork(obj: Obj) -> str:
    value = (obj.get("spec") or {}).get("hostNetwork")
    return "true" if value else "false"


def _event_source(obj: Obj) -> str:
    # core/v1 events: "source" is source.component (pkg/registry/core/event/strategy.go).
    component = (obj.get("source") or {}).get("component")
    return str(component) if component is not None else str(obj.get("reportingComponent") or "")


def _pod_ips(obj: Obj) -> str:
    # Only the first (primary) pod IP is selectable, as status.podIP.
    ips = (obj.get("status") or {}).get("podIPs") or []
    return str(ips[0].get("ip", "")) if ips else ""


def _spec_unschedulable(obj: Obj) -> str:
    return "true" if (obj.get("spec") or {}).get("unschedulable") else "false"


#: Fields whose selectable value is not the plain dotted path, by field name.
_SPECIAL_FIELD_VALUES: dict[str, Callable[[Obj], str]] = {
    "spec.hostNetwork": _hostnetwork,
    "source": _event_source,
    "status.podIPs": _pod_ips,
    "spec.unschedulable": _spec_unschedulable,
}

_META = ("metadata.name", "metadata.namespace")

#: Selectable fields per (api group, resource), from each registry's GetAttrs / field label
#: conversion in kube-apiserver. Resources not listed support only ``metadata.name`` and
#: ``metadata.namespace``.
FIELD_SETS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): (
        *_META,
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.podIPs",
        "status.nominatedNodeName",
    ),
    ("", "secrets"): (*_META, "type"),
    ("", "events"): (
        *_META,
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    ("", "namespaces"): ("metadata.name", "status.phase"),
    ("", "nodes"): ("metadata.name", "spec.unschedulable"),
    ("", "replicationcontrollers"): (*_META, "status.replicas"),
    ("", "persistentvolumes"): ("metadata.name",),
    ("", "services"): (*_META, "spec.clusterIP", "spec.type"),
    ("apps", "replicasets"): (*_META, "status.replicas"),
    ("batch", "jobs"): (*_META, "status.successful"),
    ("certificates.k8s.io", "certificatesigningrequests"): ("metadata.name", "spec.signerName"),
}


def selectable_fields(group: str, resource: str, *, namespaced: bool = True) -> tuple[str, ...]:
    """The field selector labels a built-in resource accepts (CRDs: see ``selectableFields``)."""
    default = _META if namespaced else ("metadata.name",)
    return FIELD_SETS.get((group, resource), default)


def field_value(obj: Obj, field: str) -> str:
    """The string value a field selector compares against (absent fields are ``""``)."""
    special = _SPECIAL_FIELD_VALUES.get(field)
    if special is not None:
        return special(obj)
    node: Any = obj
    for part in field.split("."):
        if not isinstance(node, Mapping):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


@dataclass(frozen=True)
class FieldTerm:
    """``field=value`` (``==`` is the same) or ``field!=value``."""

    field: str
    value: str
    negated: bool = False

    def matches(self, obj: Obj) -> bool:
        equal = field_value(obj, self.field) == self.value
        return not equal if self.negated else equal

    def __str__(self) -> str:
        return f"{self.field}{'!=' if self.negated else '='}{escape_field_value(self.value)}"


@dataclass(frozen=True)
class FieldSelector:
    """A conjunction of field terms (kube's ``andTerm``)."""

    terms: tuple[FieldTerm, ...] = ()

    def matches(self, obj: Obj) -> bool:
        return all(t.matches(obj) for t in self.terms)

    @property
    def empty(self) -> bool:
        return not self.terms

    def requires_exact(self, field: str) -> str | None:
        """The value ``field`` must equal, if a term pins it (``RequiresExactMatch``)."""
        for term in self.terms:
            if term.field == field and not term.negated:
                return term.value
        return None

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms)


def escape_field_value(value: str) -> str:
    """fields.EscapeValue."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _split_terms(text: str) -> list[str]:
    terms: list[str] = []
    start = 0
    in_slash = False
    for i, ch in enumerate(text):
        if in_slash:
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def _unescape_value(value: str) -> str:
    if not any(ch in value for ch in "\\,="):
        return value
    out: list[str] = []
    in_slash = False
    for ch in value:
        if in_slash:
            if ch not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch in ",=":
            # UnescapedRune prints the rune with %v: its code point.
            raise SelectorError(f"invalid field selector: unescaped character in value: {ord(ch)}")
        else:
            out.append(ch)
    if in_slash:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def parse_field_selector(text: str, supported: Collection[str] | None = _META) -> FieldSelector:
    """fields.ParseSelector, then the field label conversion of the resource.

    ``supported`` lists the fields the resource accepts (see :func:`selectable_fields`); a term
    on any other field is ``400 field label not supported: <field>`` as kube-apiserver answers.
    ``None`` accepts every field.
    """
    terms: list[FieldTerm] = []
    try:
        parts = sorted(_split_terms(text)) if text else []
        for part in parts:
            if not part:
                continue
            split = _split_term(part)
            if split is None:
                raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
            lhs, op, rhs = split
            terms.append(FieldTerm(lhs, _unescape_value(rhs), negated=op == "!="))
    except SelectorError as e:
        raise KubesimError(400, "BadRequest", str(e)) from None
    if supported is not None:
        for term in terms:
            if term.field not in supported:
                raise KubesimError(400, "BadRequest", f"field label not supported: {term.field}")
    return FieldSelector(tuple(terms))
