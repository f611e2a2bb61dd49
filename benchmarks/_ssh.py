"""OpenSSH local forwarding (``ssh -L``) as a baseline: our own sshd on a 127.0.0.1 port.

Everything lives in a temporary folder: a fresh host key, a fresh client key authorised for the
current user, and an sshd_config that allows nothing but key login and TCP forwarding. The
caller owns the two processes and ends them by PID (``ForwardingSsh.stop``).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._common import free_port, wait_listening

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def find_sshd() -> str | None:
    for candidate in SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("sshd")


@dataclass
class ForwardingSsh:
    local_port: int
    cipher: str
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def stop(self) -> None:
        # The client first, so the sshd child serving its connection ends with it.
        for proc in reversed(self.processes):
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def start_ssh_forward(workdir: Path, target_port: int) -> ForwardingSsh | str:
    """Start sshd and ``ssh -N -L`` to 127.0.0.1:target_port; returns a note when impossible."""
    sshd = find_sshd()
    ssh = shutil.which("ssh")
    keygen = shutil.which("ssh-keygen")
    if sshd is None or ssh is None or keygen is None:
        return "OpenSSH server not installed (apt-get install -y openssh-server): ssh -L skipped"
    folder = workdir / "ssh"
    folder.mkdir()
    for name in ("host_key", "client_key"):
        keygen_proc = await asyncio.create_subprocess_exec(
            keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)
        )
        if await keygen_proc.wait():
            return f"ssh-keygen failed ({keygen_proc.returncode}): ssh -L skipped"
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    os.chmod(folder / "authorized_keys", 0o600)
    sshd_port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {sshd_port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {folder / 'host_key'}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                "StrictModes no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "AllowTcpForwarding yes",
                "X11Forwarding no",
                "PrintMotd no",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # the privilege-separation folder sshd checks
    log = (folder / "sshd.log").open("wb")
    forwarding = ForwardingSsh(0, "")
    sshd_proc = await asyncio.create_subprocess_exec(
        sshd, "-D", "-e", "-f", str(config), stdout=log, stderr=log, stdin=subprocess.DEVNULL
    )
    forwarding.processes.append(sshd_proc)
    try:
        await wait_listening("127.0.0.1", sshd_port)
        local_port = free_port()
        common = [
            "-i", str(folder / "client_key"),
            "-p", str(sshd_port),
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip
        user_host = f"{getpass.getuser()}@127.0.0.1"
        probe = await asyncio.create_subprocess_exec(
            ssh, *common, "-G", user_host, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        out, _ = await probe.communicate()
        ciphers = next(
            (line.split()[1] for line in out.decode().splitlines() if line.startswith("ciphers ")),
            "",
        )
        forwarding.cipher = ciphers.split(",")[0]
        client = await asyncio.create_subprocess_exec(
            ssh, *common,
            "-o", "ExitOnForwardFailure=yes",
            "-N", "-L", f"127.0.0.1:{local_port}:127.0.0.1:{target_port}",
            user_host,
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        forwarding.processes.append(client)
        await wait_listening("127.0.0.1", local_port)
        forwarding.local_port = local_port
        return forwarding
    except BaseException:
        await forwarding.stop()
        raise
