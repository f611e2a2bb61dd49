"""``clusternet-hub``: the aggregated API server serving ``proxies.clusternet.io``.

Flags follow kube-apiserver's and Clusternet's names so that existing manifests carry over.
This module only parses flags into :class:`HubSettings`, configures logging and runs the hub.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import uvloop

from clusternet_aa.cli.argtypes import parse_bool, parse_duration
from clusternet_aa.errors import ClusternetError
from clusternet_aa.hub import server
from clusternet_aa.hub.app import ExtraRoutes
from clusternet_aa.hub.settings import AuthSettings, HubSettings, SettingsError, parse_feature_gates

log = logging.getLogger("clusternet_aa.cli.hub")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, klog-ish keys (ts, level, logger, msg)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(verbosity: int, log_format: str) -> None:
    """klog's -v: 0-3 is INFO, 4 and above DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity >= 4 else logging.INFO)
    if verbosity < 6:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _names(text: str | None) -> tuple[str, ...] | None:
    """A comma list flag; None when the flag was not given at all."""
    if text is None:
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clusternet-hub", description=__doc__.split("\n")[0])
    add = p.add_argument
    add("--bind-address", default="0.0.0.0", help="address to serve HTTPS on")
    add("--secure-port", type=int, default=443, help="HTTPS port (0: pick a free one)")
    add("--tls-cert-file", type=Path, help="serving certificate (self-signed when absent)")
    add("--tls-private-key-file", type=Path, help="key of --tls-cert-file")
    add("--kubeconfig", type=Path, help="the parent cluster (in-cluster config when absent)")
    add("--client-ca-file", type=Path, help="CA bundle of user client certificates")
    add("--requestheader-client-ca-file", type=Path, help="CA bundle of the front proxy")
    add("--requestheader-allowed-names", help="front-proxy CNs accepted, comma separated")
    add("--requestheader-username-headers", help="e.g. X-Remote-User")
    add("--requestheader-group-headers", help="e.g. X-Remote-Group")
    add("--requestheader-extra-headers-prefix", help="e.g. X-Remote-Extra-")
    add("--requestheader-uid-headers", help="e.g. X-Remote-Uid")
    add("--feature-gates", default="", help="A=true,B=false (known: SocketConnection=true)")
    add("--tunnel-wait-seconds", type=float, default=0.0,
        help="how long a proxied request waits for a reconnecting agent")  # fmt: skip
    # Hidden (documented in docs/operations.md): tests shorten the keepalive.
    add("--tunnel-keepalive-interval", type=parse_duration, default=15.0, help=argparse.SUPPRESS)
    add("--tunnel-keepalive-misses", type=int, default=3, help=argparse.SUPPRESS)
    add("--shutdown-delay-duration", type=parse_duration, default=0.0,
        help="seconds between not-ready and closing the listener on SIGTERM")  # fmt: skip
    add("--http2", type=parse_bool, nargs="?", const=True, default=True,
        help="offer HTTP/2 (ALPN h2) beside HTTP/1.1; false: HTTP/1.1 only")  # fmt: skip
    add("-v", "--v", dest="verbosity", type=int, default=0, help="log level (klog style)")
    add("--log-format", choices=("text", "json"), default="text")
    return p


def settings_from_args(args: argparse.Namespace) -> HubSettings:
    auth = AuthSettings(
        client_ca_file=args.client_ca_file,
        requestheader_client_ca_file=args.requestheader_client_ca_file,
        requestheader_allowed_names=_names(args.requestheader_allowed_names),
        requestheader_username_headers=_names(args.requestheader_username_headers),
        requestheader_group_headers=_names(args.requestheader_group_headers),
        requestheader_extra_headers_prefix=_names(args.requestheader_extra_headers_prefix),
        requestheader_uid_headers=_names(args.requestheader_uid_headers),
    )
    settings = HubSettings(
        bind_address=args.bind_address,
        secure_port=args.secure_port,
        tls_cert_file=args.tls_cert_file,
        tls_private_key_file=args.tls_private_key_file,
        kubeconfig=args.kubeconfig,
        auth=auth,
        feature_gates=parse_feature_gates(args.feature_gates),
        tunnel_wait_seconds=args.tunnel_wait_seconds,
        tunnel_keepalive_interval=args.tunnel_keepalive_interval,
        tunnel_keepalive_misses=args.tunnel_keepalive_misses,
        shutdown_delay_seconds=args.shutdown_delay_duration,
        http2=args.http2,
    )
    settings.validate()
    return settings


def main(argv: list[str] | None = None, *, extra_routes: ExtraRoutes | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        parser.error(str(exc))  # exits 2, as kube's flag errors
    configure_logging(args.verbosity, args.log_format)
    try:
        uvloop.run(server.run(settings, extra_routes=extra_routes))
    except ClusternetError as exc:
        log.error("clusternet-hub: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
