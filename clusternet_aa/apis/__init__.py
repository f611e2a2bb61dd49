"""Typed models of Clusternet's API objects (``clusters.clusternet.io``, ``apps.clusternet.io``).

:mod:`.meta` holds the model machinery and the metav1/corev1 subsets, :mod:`.clusters` and
:mod:`.apps` the kinds, :mod:`.labels` the well-known names. :func:`from_dict` picks the model
of any Clusternet object by its ``apiVersion`` and ``kind``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clusternet_aa.apis import apps, clusters
from clusternet_aa.apis.meta import KubeObject, ModelError

__all__ = ["KINDS", "from_dict"]

#: (apiVersion, kind) -> model class, for every kind with a CRD.
KINDS: dict[tuple[str, str], type[KubeObject]] = {
    (cls.API_VERSION, cls.KIND): cls
    for cls in (
        clusters.ClusterRegistrationRequest,
        clusters.ManagedCluster,
        apps.Subscription,
        apps.Base,
        apps.Description,
        apps.FeedInventory,
        apps.Globalization,
        apps.Localization,
        apps.HelmChart,
        apps.HelmRelease,
        apps.Manifest,
    )
}


def from_dict(obj: Mapping[str, Any]) -> KubeObject:
    """The model of a Clusternet object, chosen by its apiVersion and kind."""
    cls = KINDS.get((str(obj.get("apiVersion", "")), str(obj.get("kind", ""))))
    if cls is None:
        raise ModelError(f"not a Clusternet kind: {obj.get('apiVersion')} {obj.get('kind')}")
    return cls.from_dict(obj)
