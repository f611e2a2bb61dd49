"""Label and field selectors against kube-apiserver's parser (apimachinery labels/fields).

Expected strings are kube's: the parser error texts from ``labels/selector.go``, the validation
texts from ``util/validation/validation.go`` (note the double spaces in ``'MyName',  or``, as in
the server message quoted in kubernetes/client-go#930), and the canonical ``String()`` forms
from ``labels/selector_test.go`` (``x in (foo,,baz),y,z notin ()``).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusternet_aa.sandbox.kubesim import selectors
from clusternet_aa.sandbox.kubesim.selectors import (
    label_selector_from_dict,
    parse_field_selector,
    parse_label_selector,
)
from clusternet_aa.sandbox.kubesim.types import KubesimError

NAME_REGEX_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end"
    " with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used"
    " for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def bad_label(text: str) -> str:
    with pytest.raises(KubesimError) as info:
        parse_label_selector(text)
    assert info.value.code == 400
    assert info.value.reason == "BadRequest"
    return info.value.message


# Cases from apimachinery labels/selector_test.go TestSelectorParse / TestToString.
@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", ""),
        ("x=a,y=b,z=c", "x=a,y=b,z=c"),
        ("x!=a,y=b", "x!=a,y=b"),
        ("x=,z= ", "x=,z="),
        ("x= ,z= ", "x=,z="),
        ("!x", "!x"),
        ("x>1", "x>1"),
        ("x<7", "x<7"),
        ("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()"),
        ("x in (foo, bar)", "x in (bar,foo)"),
        ("  x  ==  a  ", "x==a"),
        ("\tx\nin\r(a)", "x in (a)"),
        ("in in (in),notin notin (notin)", "in in (in),notin notin (notin)"),
        ("z=1,a=2", "a=2,z=1"),
        ("example.com/app=web", "example.com/app=web"),
    ],
)
def test_label_selector_parses_to_kube_canonical_form(text: str, canonical: str) -> None:
    assert str(parse_label_selector(text)) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x=a y=b", "found 'y', expected: ',' or 'end of string'"),
        ("x==a==b", "found '==', expected: ',' or 'end of string'"),
        ("!x=a", "found '=', expected: ',' or 'end of string'"),
        ("x in (a", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("x in", "unable to parse requirement: found '' expected: '('"),
        (
            "x ~ a",
            "unable to parse requirement: found '~', expected: '=', '!=', '==', 'in', notin'",
        ),
        ("a,", "found '', expected: identifier after ','"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("x=(", "unable to parse requirement: found '(', expected: identifier"),
    ],
)
def test_label_selector_syntax_errors_use_kube_messages(text: str, message: str) -> None:
    assert bad_label(text) == message


def test_invalid_label_key_is_reported_with_nil_path() -> None:
    assert bad_label("-a=b") == (
        f'unable to parse requirement: <nil>: Invalid value: "-a": {NAME_REGEX_MSG}'
    )


def test_key_with_two_slashes_is_not_a_qualified_name() -> None:
    assert "a qualified name must consist of" in bad_label("a/b/c")
    assert "with an optional DNS subdomain prefix and '/'" in bad_label("a/b/c")


def test_key_prefix_must_be_a_dns_subdomain_and_name_at_most_63() -> None:
    assert "prefix part a lowercase RFC 1123 subdomain" in bad_label("Example.com/a")
    assert "prefix part must be non-empty" in bad_label("/a")
    assert "name part must be no more than 63 characters" in bad_label("a" * 64)
    parse_label_selector("a" * 63)


def test_invalid_label_value_names_the_value_path() -> None:
    message = bad_label("app=a_")
    assert message.startswith('unable to parse requirement: values[0][app]: Invalid value: "a_": ')
    assert "a valid label must be an empty string" in message
    assert "must be no more than 63 characters" in bad_label("app=" + "v" * 64)


def test_gt_lt_need_integer_values() -> None:
    message = bad_label("x>a")
    assert "values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators" in message


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("", {"a": "b"}, True),
        ("a=b", {"a": "b"}, True),
        ("a=b", {"a": "c"}, False),
        ("a=b", {}, False),
        ("a==b", {"a": "b"}, True),
        ("a!=b", {}, True),
        ("a!=b", {"a": "b"}, False),
        ("a!=b", {"a": "c"}, True),
        ("a in (x,y)", {"a": "y"}, True),
        ("a in (x,y)", {"a": "z"}, False),
        ("a in (x,y)", {}, False),
        ("a notin (x,y)", {}, True),
        ("a notin (x,y)", {"a": "x"}, False),
        ("a", {"a": ""}, True),
        ("a", {"b": "x"}, False),
        ("!a", {"b": "x"}, True),
        ("!a", {"a": "x"}, False),
        ("a=b,c", {"a": "b", "c": "1"}, True),
        ("a=b,c", {"a": "b"}, False),
        ("a=", {"a": ""}, True),
        ("a>5", {"a": "6"}, True),
        ("a>5", {"a": "5"}, False),
        ("a>5", {"a": "x"}, False),
        ("a<5", {}, False),
        ("a<5", {"a": "-3"}, True),
    ],
)
def test_label_selector_matching(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(text).matches(labels) is expected


_label_name = st.from_regex(r"[a-z0-9]([-a-z0-9_.]{0,10}[a-z0-9])?", fullmatch=True)
_requirement_text = st.one_of(
    st.builds(lambda k: k, _label_name),
    st.builds(lambda k: "!" + k, _label_name),
    st.builds(
        lambda k, op, v: f"{k}{op}{v}", _label_name, st.sampled_from(["=", "==", "!="]), _label_name
    ),
    st.builds(
        lambda k, op, vs: f"{k} {op} ({','.join(vs)})",
        _label_name,
        st.sampled_from(["in", "notin"]),
        st.lists(_label_name, min_size=1, max_size=3),
    ),
)


@given(st.lists(_requirement_text, max_size=5))
def test_label_selector_string_round_trips(terms: list[str]) -> None:
    selector = parse_label_selector(",".join(terms))
    again = parse_label_selector(str(selector))
    assert again == selector
    assert str(again) == str(selector)


@given(
    st.lists(_requirement_text, max_size=4), st.dictionaries(_label_name, _label_name, max_size=4)
)
def test_label_selector_is_a_conjunction(terms: list[str], labels: dict[str, str]) -> None:
    whole = parse_label_selector(",".join(terms)).matches(labels)
    assert whole == all(parse_label_selector(t).matches(labels) for t in terms)


def test_label_selector_from_dict_follows_label_selector_as_selector() -> None:
    sel = label_selector_from_dict(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "team", "operator": "Exists"},
            ],
        }
    )
    assert sel.matches({"app": "web", "tier": "fe", "team": "x"})
    assert not sel.matches({"app": "web", "tier": "fe", "team": "x", "legacy": "1"})
    assert not sel.matches({"app": "web", "tier": "fe", "team": "x", "env": "dev"})
    assert not sel.matches({"app": "web", "tier": "db", "team": "x"})
    assert str(sel) == "app=web,env notin (dev),!legacy,team,tier in (be,fe)"
    assert label_selector_from_dict({}).matches({"any": "thing"})
    assert not label_selector_from_dict(None).matches({})


def test_label_selector_from_dict_rejects_what_kube_rejects() -> None:
    with pytest.raises(KubesimError) as info:
        label_selector_from_dict({"matchExpressions": [{"key": "a", "operator": "Gt"}]})
    assert info.value.message == '"Gt" is not a valid label selector operator'
    with pytest.raises(KubesimError) as info:
        label_selector_from_dict({"matchExpressions": [{"key": "a", "operator": "In"}]})
    assert info.value.message == (
        "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
    )
    with pytest.raises(KubesimError) as info:
        label_selector_from_dict(
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}
        )
    assert "values set must be empty for exists and does not exist" in info.value.message


# --- field selectors ------------------------------------------------------------------------

POD = {
    "metadata": {"name": "web-0", "namespace": "prod"},
    "spec": {"nodeName": "n1", "hostNetwork": True},
    "status": {"phase": "Running"},
}


def test_field_selector_matches_metadata_and_pod_fields() -> None:
    pod_fields = selectors.selectable_fields("", "pods")
    assert parse_field_selector("metadata.name=web-0").matches(POD)
    assert parse_field_selector("metadata.name==web-0,metadata.namespace=prod").matches(POD)
    assert not parse_field_selector("metadata.namespace!=prod").matches(POD)
    sel = parse_field_selector("spec.nodeName=n1,status.phase!=Pending", supported=pod_fields)
    assert sel.matches(POD)
    assert parse_field_selector("spec.hostNetwork=true", supported=pod_fields).matches(POD)
    # An absent field has the empty value, so "=" matches it and "!=" does not.
    assert parse_field_selector("spec.nodeName=", supported=pod_fields).matches({"spec": {}})
    assert parse_field_selector("").empty


def test_unsupported_field_is_rejected_like_kube() -> None:
    with pytest.raises(KubesimError) as info:
        parse_field_selector("spec.nodeName=n1")
    assert (info.value.code, info.value.reason) == (400, "BadRequest")
    assert info.value.message == "field label not supported: spec.nodeName"
    secret_fields = selectors.selectable_fields("", "secrets")
    parse_field_selector("type=Opaque", supported=secret_fields)
    node_fields = selectors.selectable_fields("", "nodes", namespaced=False)
    with pytest.raises(KubesimError, match=r"field label not supported: metadata\.namespace"):
        parse_field_selector("metadata.namespace=x", supported=node_fields)


def test_event_fields() -> None:
    event = {
        "metadata": {"name": "e", "namespace": "d"},
        "involvedObject": {"kind": "Pod", "name": "web-0"},
        "reason": "Killing",
        "type": "Normal",
        "source": {"component": "kubelet"},
    }
    fields = selectors.selectable_fields("", "events")
    sel = parse_field_selector(
        "involvedObject.kind=Pod,involvedObject.name=web-0,reason=Killing,type=Normal,"
        "source=kubelet",
        supported=fields,
    )
    assert sel.matches(event)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
        ("metadata.name=a,b", "invalid selector: 'metadata.name=a,b'; can't understand 'b'"),
        ("metadata.name=a\\x", "invalid field selector: invalid escape sequence: \\x"),
        ("metadata.name=a\\", "invalid field selector: invalid escape sequence: \\"),
        ("metadata.name=a=b", "invalid field selector: unescaped character in value: 61"),
    ],
)
def test_field_selector_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(KubesimError) as info:
        parse_field_selector(text)
    assert info.value.message == message


def test_field_selector_escaping() -> None:
    sel = parse_field_selector("metadata.name=a\\,b\\=c\\\\d")
    assert sel.matches({"metadata": {"name": "a,b=c\\d"}})
    assert sel.requires_exact("metadata.name") == "a,b=c\\d"
    assert parse_field_selector(str(sel)) == sel


@given(st.text(max_size=20))
def test_field_value_escape_round_trips(value: str) -> None:
    sel = parse_field_selector("metadata.name=" + selectors.escape_field_value(value))
    assert sel.matches({"metadata": {"name": value}})
