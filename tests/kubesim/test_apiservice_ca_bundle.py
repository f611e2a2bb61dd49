"""caBundle decoding follows Go's base64 decoder: CR and LF are skipped (kustomize wraps lines)."""

from __future__ import annotations

import base64
import textwrap

from clusternet_aa.sandbox.kubesim.apiservices import _decode_bundle
from clusternet_aa.sandbox.kubesim.pki import make_ca


def test_wrapped_ca_bundle_decodes_like_go() -> None:
    pem = make_ca("wrapped").cert_pem
    encoded = base64.b64encode(pem).decode()
    wrapped = "\n".join(textwrap.wrap(encoded, 70)) + "\n"
    assert _decode_bundle(wrapped) == pem
    assert _decode_bundle(wrapped.replace("\n", "\r\n")) == pem
    assert _decode_bundle(encoded) == pem


def test_garbage_is_no_bundle_at_all() -> None:
    assert _decode_bundle("not base64!") == b""
