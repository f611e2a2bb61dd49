"""Real kubectl against in-process kubesim instances, for the manifest and plugin tests."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
KUBECTL = BIN / "kubectl"
MANIFESTS = ROOT / "manifests"


@dataclass
class Kubectl:
    """Runs real kubectl without blocking the loop an in-process kubesim serves on."""

    kubeconfig: Path
    home: Path

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.home / "cache"),
        }

    async def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            str(KUBECTL),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(),
        )
        async with asyncio.timeout(30):
            out, err = await process.communicate(stdin.encode() if stdin else None)
        code = process.returncode
        assert code is not None
        if check and code != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({code}):\n{out.decode()}{err.decode()}"
            )
        return code, out.decode(), err.decode()

    async def json(self, *args: str) -> Any:
        return json.loads((await self.run(*args, "-o", "json"))[1])

    async def allowed(self, reviews: list[dict[str, Any]]) -> list[bool]:
        """Answers of the cluster's RBAC to several SubjectAccessReviews, in one kubectl call."""
        document = {"apiVersion": "v1", "kind": "List", "items": reviews}
        _, out, _ = await self.run("create", "-f", "-", "-o", "json", stdin=json.dumps(document))
        decoder, items, position = json.JSONDecoder(), [], 0
        while out[position:].strip():  # one JSON document per created review
            position += len(out[position:]) - len(out[position:].lstrip())
            item, position = decoder.raw_decode(out, position)
            items.append(item)
        assert len(items) == len(reviews), out
        return [bool(item["status"].get("allowed")) for item in items]


def review(
    user: str,
    verb: str,
    resource: str,
    *,
    group: str = "",
    subresource: str = "",
    name: str = "",
    namespace: str = "",
    groups: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A SubjectAccessReview for :meth:`Kubectl.allowed`."""
    attributes = {"verb": verb, "group": group, "resource": resource}
    for key, value in (("subresource", subresource), ("name", name), ("namespace", namespace)):
        if value:
            attributes[key] = value
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": list(groups), "resourceAttributes": attributes},
    }


async def expect_access(kubectl: Kubectl, cases: list[tuple[bool, dict[str, Any]]]) -> None:
    """Every review answers as expected; the failure lists each wrong answer."""
    answers = await kubectl.allowed([r for _, r in cases])
    wrong = [
        f"{'allowed' if got else 'denied'}: {r['spec']['user']} {r['spec']['resourceAttributes']}"
        for (want, r), got in zip(cases, answers, strict=True)
        if want != got
    ]
    assert not wrong, "\n".join(wrong)
