"""``clusternet-certs`` (``python -m clusternet_aa.certs``): certificates for a real installation.

Writes PEM files into ``--out-dir`` (keys mode 0600), prints the APIService ``caBundle`` (base64
of the CA's PEM) on stdout, and optionally:

* ``--apiservice FILE``: writes a copy of that manifest with ``spec.caBundle`` filled in (and
  ``insecureSkipTLSVerify`` removed) to ``--apiservice-out`` (default
  ``<out-dir>/apiservice.yaml``);
* ``--kustomize-base DIR``: writes ``<out-dir>/kustomization.yaml``, an overlay of the hub base
  that adds the serving-certificate Secret and fills the APIService ``caBundle`` from it.

Progress and results are logged on stderr, one line per event (``--log-format json`` for JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from clusternet_aa.certs import (
    CA_CERT,
    KUSTOMIZATION,
    SERVING_CERT,
    SERVING_KEY,
    SERVING_SECRET,
    CertOptions,
    CertResult,
    CertsError,
    generate,
    write_file,
)

log = logging.getLogger("clusternet_aa.certs")

APISERVICE_NAME = "v1alpha1.proxies.clusternet.io"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        return json.dumps(entry)


def _configure_logging(log_format: str, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.INFO)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clusternet-certs",
        description="Make the hub's CA and serving certificate (and test front-proxy material).",
    )
    add = p.add_argument
    add("--out-dir", type=Path, required=True, help="where the PEM files are written")
    add("--service", default="clusternet-hub", help="the hub's Service name")
    add("--namespace", default="clusternet-system", help="the hub's namespace")
    add("--cluster-domain", default="cluster.local", help="the cluster's DNS domain")
    add("--extra-san", action="append", default=[], metavar="NAME_OR_IP",
        help="another DNS name or IP for the serving certificate (repeatable)")  # fmt: skip
    add("--days", type=int, default=365, help="validity of the leaf certificates")
    add("--ca-days", type=int, default=3650, help="validity of a new CA")
    add("--key-type", choices=("ecdsa", "rsa"), default="ecdsa", help="P-256 or RSA-2048")
    add("--front-proxy", action="store_true",
        help="also make a request-header CA and a front-proxy-client cert (tests)")  # fmt: skip
    add("--force", action="store_true", help="replace existing CAs and certificates")
    add("--apiservice", type=Path, help="an APIService manifest to copy with caBundle filled in")
    add("--apiservice-out", type=Path, help="where the copy goes (<out-dir>/apiservice.yaml)")
    add("--kustomize-base", type=Path,
        help="the hub kustomization (manifests/hub) to overlay in <out-dir>")  # fmt: skip
    add("--log-format", choices=("text", "json"), default="text")
    add("-q", "--quiet", action="store_true", help="log warnings only")
    return p


def patch_apiservices(text: str, ca_bundle: str) -> tuple[str, int]:
    """``text`` (YAML, possibly several documents) with every APIService's caBundle set."""
    documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    patched = 0
    for doc in documents:
        if isinstance(doc, dict) and doc.get("kind") == "APIService":
            spec = doc.setdefault("spec", {})
            spec.pop("insecureSkipTLSVerify", None)
            spec["caBundle"] = ca_bundle
            patched += 1
    return yaml.safe_dump_all(documents, sort_keys=False), patched


def kustomization(base: Path, out_dir: Path) -> str:
    """An overlay of ``base`` adding the serving Secret and filling the caBundle from it."""
    relative = os.path.relpath(base.resolve(), out_dir.resolve())
    document = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [relative],
        "secretGenerator": [
            {
                "name": SERVING_SECRET,
                "namespace": "clusternet-system",
                "type": "kubernetes.io/tls",
                "files": [SERVING_CERT, SERVING_KEY, CA_CERT],
            }
        ],
        "replacements": [
            {
                "source": {
                    "kind": "Secret",
                    "name": SERVING_SECRET,
                    "fieldPath": f"data.[{CA_CERT}]",
                },
                "targets": [
                    {
                        "select": {"kind": "APIService", "name": APISERVICE_NAME},
                        "fieldPaths": ["spec.caBundle"],
                    }
                ],
            }
        ],
    }
    header = (
        "# Written by clusternet-certs: the hub with its serving certificate, and the APIService\n"
        "# caBundle filled from it. This directory holds private keys: do not commit it.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False)


def run(args: argparse.Namespace) -> CertResult:
    options = CertOptions(
        out_dir=args.out_dir,
        service=args.service,
        namespace=args.namespace,
        cluster_domain=args.cluster_domain,
        extra_sans=tuple(args.extra_san),
        ca_days=args.ca_days,
        days=args.days,
        key_type=args.key_type,
        front_proxy=args.front_proxy,
        force=args.force,
    )
    log.info("making certificates in %s", options.out_dir)
    result = generate(options)
    for path in result.written:
        log.info("wrote %s", path, extra={"fields": {"file": str(path), "action": "wrote"}})
    for path in result.kept:
        log.info("kept %s", path, extra={"fields": {"file": str(path), "action": "kept"}})
    if args.apiservice is not None:
        try:
            text = args.apiservice.read_text()
        except OSError as exc:
            raise CertsError(f"--apiservice: {exc.strerror}: {args.apiservice}") from exc
        patched, count = patch_apiservices(text, result.ca_bundle)
        if count == 0:
            raise CertsError(f"--apiservice: {args.apiservice} holds no APIService")
        out = args.apiservice_out or options.out_dir / "apiservice.yaml"
        write_file(out, patched.encode(), private=False)
        log.info("wrote %s with the caBundle", out, extra={"fields": {"file": str(out)}})
    if args.kustomize_base is not None:
        if not (args.kustomize_base / KUSTOMIZATION).exists():
            raise CertsError(f"--kustomize-base: no {KUSTOMIZATION} in {args.kustomize_base}")
        out = options.out_dir / KUSTOMIZATION
        write_file(out, kustomization(args.kustomize_base, options.out_dir).encode(), private=False)
        log.info("wrote %s (apply it with: kubectl apply -k %s)", out, options.out_dir)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.log_format, args.quiet)
    try:
        result = run(args)
    except (CertsError, OSError) as exc:
        print(f"clusternet-certs: error: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    print(result.ca_bundle)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
