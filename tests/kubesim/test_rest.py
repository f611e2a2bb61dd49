"""REST semantics against kube-apiserver's: status codes, Status bodies and metadata."""

from __future__ import annotations

import copy
from typing import Any

from clusternet_aa.sandbox.kubesim.server import KubesimServer
from tests.kubesim.conftest import Raw, configmap, names

CM = "/api/v1/namespaces/default/configmaps"
DEPLOY = "/apis/apps/v1/namespaces/default/deployments"


def deployment(name: str, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
        "status": {"replicas": 99},
    }


async def test_create_get_list_metadata(raw: Raw) -> None:
    created = await raw.post(CM, configmap("a"))
    assert created.status == 201
    meta = created.body["metadata"]
    assert meta["uid"]
    assert meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > 0
    assert created.body["kind"] == "ConfigMap"
    assert created.body["apiVersion"] == "v1"
    fetched = await raw.get(f"{CM}/a")
    assert fetched.status == 200
    assert fetched.body == created.body
    listed = await raw.get(CM)
    assert listed.body["kind"] == "ConfigMapList"
    assert listed.body["apiVersion"] == "v1"
    assert int(listed.body["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])
    assert "a" in names(listed.body["items"])
    second = await raw.post(CM, configmap("b"))
    assert int(second.body["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])


async def test_errors_are_kube_status_bodies(raw: Raw) -> None:
    await raw.post(CM, configmap("dup"))
    again = await raw.post(CM, configmap("dup"))
    assert again.status == 409
    assert again.body["kind"] == "Status"
    assert again.body["reason"] == "AlreadyExists"
    assert again.body["message"] == 'configmaps "dup" already exists'
    missing = await raw.get(f"{CM}/nope")
    assert missing.status == 404
    assert missing.reason == "NotFound"
    assert missing.body["message"] == 'configmaps "nope" not found'
    assert missing.body["details"] == {"name": "nope", "kind": "configmaps"}
    grouped = await raw.get(f"{DEPLOY}/nope")
    assert grouped.body["message"] == 'deployments.apps "nope" not found'
    unknown = await raw.get("/api/v1/namespaces/default/widgets")
    assert unknown.status == 404
    assert unknown.reason == "NotFound"


async def test_bad_bodies_are_4xx(raw: Raw) -> None:
    bad_json = await raw.post(CM, data=b"{not json", content_type="application/json")
    assert bad_json.status == 400
    assert bad_json.reason == "BadRequest"
    bad_yaml = await raw.post(CM, data=b"a: [b", content_type="application/yaml")
    assert bad_yaml.status == 400
    good_yaml = await raw.post(
        CM,
        data=b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fromyaml\n",
        content_type="application/yaml",
    )
    assert good_yaml.status == 201
    # kube-apiserver defaults a missing kind/apiVersion from the URL (typed clients omit them).
    no_kind = configmap("nokind")
    del no_kind["kind"]
    assert (await raw.post(CM, no_kind)).body["kind"] == "ConfigMap"
    no_version = configmap("noversion")
    del no_version["apiVersion"]
    assert (await raw.post(CM, no_version)).body["apiVersion"] == "v1"
    wrong_version = configmap("x", apiVersion="apps/v1")
    assert (await raw.post(CM, wrong_version)).status == 400
    wrong_kind = configmap("x", kind="Secret")
    assert (await raw.post(CM, wrong_kind)).status == 400
    other_ns = await raw.post(CM, configmap("x", namespace="kube-system"))
    assert other_ns.status == 400
    assert "does not match the namespace" in other_ns.body["message"]
    not_object = await raw.post(CM, data=b"[1,2]")
    assert not_object.status == 400
    text = await raw.post(CM, data=b"hello", content_type="text/plain")
    assert text.status == 415
    assert text.reason == "UnsupportedMediaType"
    huge = configmap("huge", data={"k": "x" * (3 * 1024 * 1024 + 10)})
    too_large = await raw.post(CM, huge)
    assert too_large.status == 413
    assert too_large.reason == "RequestEntityTooLarge"


async def test_names_are_validated_and_generated(raw: Raw) -> None:
    no_name = configmap("")
    no_name["metadata"] = {"namespace": "default"}
    invalid = await raw.post(CM, no_name)
    assert invalid.status == 422
    assert invalid.reason == "Invalid"
    assert invalid.body["message"] == (
        'ConfigMap "" is invalid: metadata.name: Required value: name or generateName is required'
    )
    assert invalid.body["details"]["causes"][0]["field"] == "metadata.name"
    bad = await raw.post(CM, configmap("Bad_Name"))
    assert bad.status == 422
    generated = configmap("")
    generated["metadata"] = {"generateName": "gen-"}
    made = await raw.post(CM, generated)
    assert made.status == 201
    name = made.body["metadata"]["name"]
    assert name.startswith("gen-")
    assert len(name) == len("gen-") + 5
    bad_label = configmap("lbl")
    bad_label["metadata"]["labels"] = {"a": "not valid!"}
    assert (await raw.post(CM, bad_label)).status == 422


async def test_namespace_must_exist(raw: Raw) -> None:
    reply = await raw.post("/api/v1/namespaces/ghost/configmaps", configmap("a", "ghost"))
    assert reply.status == 404
    assert reply.body["message"] == 'namespaces "ghost" not found'


async def test_put_conflicts_and_noop(raw: Raw) -> None:
    created = (await raw.post(CM, configmap("c"))).body
    stale = copy.deepcopy(created)
    updated = copy.deepcopy(created)
    updated["data"] = {"k": "v2"}
    ok = await raw.put(f"{CM}/c", updated)
    assert ok.status == 200
    assert int(ok.body["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    stale["data"] = {"k": "v3"}
    conflict = await raw.put(f"{CM}/c", stale)
    assert conflict.status == 409
    assert conflict.reason == "Conflict"
    assert conflict.body["message"] == (
        'Operation cannot be fulfilled on configmaps "c": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    same = await raw.put(f"{CM}/c", ok.body)
    assert same.body["metadata"]["resourceVersion"] == ok.body["metadata"]["resourceVersion"]
    unconditional = copy.deepcopy(ok.body)
    del unconditional["metadata"]["resourceVersion"]
    unconditional["data"] = {"k": "v4"}
    assert (await raw.put(f"{CM}/c", unconditional)).status == 200
    renamed = copy.deepcopy(ok.body)
    renamed["metadata"]["name"] = "other"
    assert (await raw.put(f"{CM}/c", renamed)).status == 400
    missing = await raw.put(f"{CM}/ghost", configmap("ghost"))
    assert missing.status == 404


async def test_status_subresource_and_generation(raw: Raw) -> None:
    created = await raw.post(DEPLOY, deployment("web"))
    assert created.status == 201
    obj = created.body
    assert "status" not in obj or obj["status"] in ({}, None)
    assert obj["metadata"]["generation"] == 1
    obj["status"] = {"replicas": 5}
    obj["metadata"]["labels"] = {"x": "y"}
    main = (await raw.put(f"{DEPLOY}/web", obj)).body
    assert main["metadata"]["labels"] == {"x": "y"}
    assert main["metadata"]["generation"] == 1, "metadata changes do not bump generation"
    assert (main.get("status") or {}).get("replicas") is None, "main resource ignores status"
    main["status"] = {"replicas": 3}
    main["spec"]["replicas"] = 7
    status = (await raw.put(f"{DEPLOY}/web/status", main)).body
    assert status["status"]["replicas"] == 3
    assert status["spec"]["replicas"] == 1, "status writes ignore spec"
    status["spec"]["replicas"] = 4
    bumped = (await raw.put(f"{DEPLOY}/web", status)).body
    assert bumped["metadata"]["generation"] == 2
    assert bumped["status"]["replicas"] == 3
    scale = await raw.get(f"{DEPLOY}/web/scale")
    assert scale.body["kind"] == "Scale"
    assert scale.body["spec"]["replicas"] == 4
    assert scale.body["status"]["selector"] == "app=web"
    scale.body["spec"]["replicas"] = 2
    rescaled = await raw.put(f"{DEPLOY}/web/scale", scale.body)
    assert rescaled.status == 200
    assert rescaled.body["spec"]["replicas"] == 2
    assert (await raw.get(f"{DEPLOY}/web")).body["spec"]["replicas"] == 2


async def test_finalizers_hold_deletion(raw: Raw) -> None:
    obj = configmap("held")
    obj["metadata"]["finalizers"] = ["example.com/hold"]
    await raw.post(CM, obj)
    deleted = await raw.delete(f"{CM}/held")
    assert deleted.status == 200
    assert deleted.body["metadata"]["deletionTimestamp"]
    still = (await raw.get(f"{CM}/held")).body
    assert still["metadata"]["deletionTimestamp"]
    still["metadata"]["finalizers"].append("example.com/more")
    refused = await raw.put(f"{CM}/held", still)
    assert refused.status == 422
    still["metadata"]["finalizers"] = []
    released = await raw.put(f"{CM}/held", still)
    assert released.status == 200
    assert (await raw.get(f"{CM}/held")).status == 404


async def test_delete_returns_success_status(raw: Raw) -> None:
    created = (await raw.post(CM, configmap("gone"))).body
    reply = await raw.delete(f"{CM}/gone")
    assert reply.status == 200
    assert reply.body["kind"] == "Status"
    assert reply.body["status"] == "Success"
    assert reply.body["details"] == {
        "name": "gone",
        "kind": "configmaps",
        "uid": created["metadata"]["uid"],
    }
    assert (await raw.delete(f"{CM}/gone")).status == 404
    await raw.post(CM, configmap("pre"))
    wrong = await raw.delete(f"{CM}/pre", {"preconditions": {"uid": "nope"}})
    assert wrong.status == 409


async def test_namespace_deletion_removes_contents(raw: Raw, sim: KubesimServer) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tmp"}}
    assert (await raw.post("/api/v1/namespaces", ns)).status == 201
    await sim.settle()
    assert (await raw.get("/api/v1/namespaces/tmp/serviceaccounts/default")).status == 200
    await raw.post("/api/v1/namespaces/tmp/configmaps", configmap("x", "tmp"))
    deleting = await raw.delete("/api/v1/namespaces/tmp")
    assert deleting.status == 200
    assert deleting.body["status"]["phase"] == "Terminating"
    refused = await raw.post("/api/v1/namespaces/tmp/configmaps", configmap("y", "tmp"))
    assert refused.status in (403, 404)
    await sim.settle()
    assert (await raw.get("/api/v1/namespaces/tmp")).status == 404
    assert (await raw.get("/api/v1/namespaces/tmp/configmaps/x")).status == 404


async def test_owner_references_are_garbage_collected(raw: Raw, sim: KubesimServer) -> None:
    owner = (await raw.post(CM, configmap("owner"))).body
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    for name in ("dep1", "dep2"):
        dep = configmap(name)
        dep["metadata"]["ownerReferences"] = [ref]
        await raw.post(CM, dep)
    await sim.settle()
    assert (await raw.get(f"{CM}/dep1")).status == 200
    await raw.delete(f"{CM}/owner")
    await sim.settle()
    assert (await raw.get(f"{CM}/dep1")).status == 404
    assert (await raw.get(f"{CM}/dep2")).status == 404

    orphaner = (await raw.post(CM, configmap("orphaner"))).body
    dep = configmap("kept")
    dep["metadata"]["ownerReferences"] = [
        {**ref, "name": "orphaner", "uid": orphaner["metadata"]["uid"]}
    ]
    await raw.post(CM, dep)
    await raw.delete(f"{CM}/orphaner", {"propagationPolicy": "Orphan"})
    await sim.settle()
    assert (await raw.get(f"{CM}/orphaner")).status == 404
    kept = await raw.get(f"{CM}/kept")
    assert kept.status == 200
    assert not kept.body["metadata"].get("ownerReferences")


async def test_list_selectors_and_pages(raw: Raw) -> None:
    for index in range(5):
        obj = configmap(f"p{index}")
        obj["metadata"]["labels"] = {"tier": "a" if index % 2 else "b", "n": str(index)}
        await raw.post(CM, obj)
    odd = await raw.get(f"{CM}?labelSelector=tier%3Da")
    assert names(odd.body["items"]) == ["p1", "p3"]
    notin = await raw.get(f"{CM}?labelSelector=n%20notin%20(0,1,2),tier")
    assert names(notin.body["items"]) == ["p3", "p4"]
    exists = await raw.get(f"{CM}?labelSelector=!tier")
    assert "p0" not in names(exists.body["items"])
    by_name = await raw.get(f"{CM}?fieldSelector=metadata.name%3Dp2")
    assert names(by_name.body["items"]) == ["p2"]
    bad_field = await raw.get(f"{CM}?fieldSelector=spec.x%3D1")
    assert bad_field.status == 400
    bad_label = await raw.get(f"{CM}?labelSelector=a%20in%20")
    assert bad_label.status == 400
    seen: list[str] = []
    path = f"{CM}?labelSelector=tier&limit=2"
    page = await raw.get(path)
    assert len(page.body["items"]) == 2
    assert page.body["metadata"]["remainingItemCount"] == 3
    while True:
        seen += names(page.body["items"])
        token = page.body["metadata"].get("continue")
        if not token:
            break
        page = await raw.get(f"{path}&continue={token}")
    assert seen == ["p0", "p1", "p2", "p3", "p4"]
    everywhere = await raw.get("/api/v1/configmaps")
    namespaces = {i["metadata"]["namespace"] for i in everywhere.body["items"]}
    assert {"default", "kube-system"} <= namespaces


async def test_delete_collection(raw: Raw) -> None:
    for name in ("d1", "d2", "keep"):
        obj = configmap(name)
        obj["metadata"]["labels"] = {"drop": "yes" if name != "keep" else "no"}
        await raw.post(CM, obj)
    reply = await raw.delete(f"{CM}?labelSelector=drop%3Dyes")
    assert reply.status == 200
    assert reply.body["kind"] == "ConfigMapList"
    assert sorted(names(reply.body["items"])) == ["d1", "d2"]
    left = await raw.get(f"{CM}?labelSelector=drop")
    assert names(left.body["items"]) == ["keep"]


async def test_authentication_and_authorization(raw: Raw, sim: KubesimServer) -> None:
    bad = await raw.get(CM, token="wrong")
    assert bad.status == 401
    assert bad.reason == "Unauthorized"
    async with raw.session.get(sim.url + CM) as anonymous:
        body = await anonymous.json()
        assert anonymous.status == 403
        assert body["reason"] == "Forbidden"
        assert 'User "system:anonymous" cannot list resource "configmaps"' in body["message"]
    async with raw.session.get(sim.url + "/version") as version:
        assert version.status == 200


async def test_client_certificate_identity(sim: KubesimServer) -> None:
    import aiohttp

    cert = sim.pki.issue_client_cert("alice", ["devs"])
    connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context(cert))
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            sim.url + "/apis/authentication.k8s.io/v1/selfsubjectreviews", json=review
        ) as reply,
    ):
        body = await reply.json()
    assert reply.status == 201
    assert body["status"]["userInfo"]["username"] == "alice"
    assert "devs" in body["status"]["userInfo"]["groups"]


async def test_method_and_scope_errors(raw: Raw) -> None:
    get_review = await raw.get("/apis/authorization.k8s.io/v1/subjectaccessreviews")
    assert get_review.status == 405
    assert get_review.reason == "MethodNotAllowed"
    named_post = await raw.post(f"{CM}/a", configmap("a"))
    assert named_post.status == 405
    cluster_in_ns = await raw.get("/api/v1/namespaces/default/nodes")
    assert cluster_in_ns.status == 404
    garbage = await raw.request("PATCH", f"{CM}/x", data=b"{}", content_type="text/plain")
    assert garbage.status in (404, 415)


async def test_field_validation_and_patches(raw: Raw) -> None:
    unknown = configmap("fv", extra_field=1)
    strict = await raw.post(f"{CM}?fieldValidation=Strict", unknown)
    assert strict.status == 400
    assert 'strict decoding error: unknown field "extra_field"' in strict.body["message"]
    warned = await raw.post(f"{CM}?fieldValidation=Warn", unknown)
    assert warned.status == 201
    assert warned.headers.getall("Warning") == ['299 - "unknown field \\"extra_field\\""']
    assert "extra_field" not in warned.body, "unknown fields are dropped"
    merge = await raw.patch(f"{CM}/fv", {"data": {"m": "1"}}, "application/merge-patch+json")
    assert merge.body["data"] == {"k": "v", "m": "1"}
    ops = [{"op": "replace", "path": "/data/k", "value": "j"}]
    json_patch = await raw.patch(f"{CM}/fv", ops, "application/json-patch+json")
    assert json_patch.body["data"]["k"] == "j"
    smp = await raw.patch(
        f"{CM}/fv", {"data": {"m": None}}, "application/strategic-merge-patch+json"
    )
    assert smp.body["data"] == {"k": "j"}
    missing = await raw.patch(f"{CM}/none", {"data": {}}, "application/merge-patch+json")
    assert missing.status == 404
    applied = await raw.patch(
        f"{CM}/ssa?fieldManager=tester",
        configmap("ssa"),
        "application/apply-patch+yaml",
    )
    assert applied.status == 201
    managers = [m["manager"] for m in applied.body["metadata"]["managedFields"]]
    assert managers == ["tester"]
    no_manager = await raw.patch(f"{CM}/ssa", configmap("ssa"), "application/apply-patch+yaml")
    assert no_manager.status == 422
