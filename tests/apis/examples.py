"""Worked examples: the objects of the reference's §11, one per Clusternet kind.

§11.1 and §11.2 are copied in shape (placeholders filled with real values: the CRR token and
CA are base64 of known bytes); §11.3 describes Manifest, FeedInventory, Base, Description and
HelmRelease in prose, so they are written here from that description.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import yaml

CLUSTER_ID = "3f1c2a9e-5d2b-4c1e-9b7a-0a1b2c3d4e5f"
TOKEN = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln"
CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUEXAMPLE\n-----END CERTIFICATE-----\n"

DEPLOYMENT_JSON = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "web"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}},
}
VALUES_JSON = {"master": {"persistence": {"enabled": False}}}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


CRR = f"""
apiVersion: clusters.clusternet.io/v1beta1
kind: ClusterRegistrationRequest
metadata:
  name: clusternet-{CLUSTER_ID}
  labels:
    clusters.clusternet.io/registered-by: clusternet-agent
    clusters.clusternet.io/cluster-id: {CLUSTER_ID}
    clusters.clusternet.io/cluster-name: clusternet-cluster-x7k2p
spec:
  clusterId: {CLUSTER_ID}
  clusterName: clusternet-cluster-x7k2p
  clusterType: StandardCluster
  syncMode: Dual
  clusterLabels: {{region: eu-west}}
status:
  result: Approved
  dedicatedNamespace: clusternet-q8w4z
  managedClusterName: clusternet-cluster-x7k2p
  token: {b64(TOKEN)}
  caCertificate: {b64(CA_PEM)}
"""

MANAGED_CLUSTER = f"""
apiVersion: clusters.clusternet.io/v1beta1
kind: ManagedCluster
metadata:
  name: clusternet-cluster-x7k2p
  namespace: clusternet-q8w4z
  labels:
    clusternet.io/created-by: clusternet-agent
    clusters.clusternet.io/cluster-id: {CLUSTER_ID}
    clusters.clusternet.io/cluster-name: clusternet-cluster-x7k2p
    region: eu-west
    node.clusternet.io/gpu: "true"
spec:
  clusterId: {CLUSTER_ID}
  clusterType: StandardCluster
  syncMode: Dual
  taints: []
status:
  lastObservedTime: "2026-05-01T10:00:00Z"
  k8sVersion: v1.29.4
  agentVersion: v0.18.0
  platform: linux/amd64
  apiserverURL: https://10.96.0.1:443
  healthz: true
  livez: true
  readyz: true
  appPusher: true
  useSocket: true
  kubeQPS: 50
  kubeBurst: 100
  capacity: {{cpu: "16", memory: 64Gi}}
  allocatable: {{cpu: 15800m, memory: 62Gi}}
  clusterCIDR: 10.244.0.0/16
  serviceCIDR: 10.96.0.0/12
  nodeStatistics: {{readyNodes: 3}}
  heartbeatFrequencySeconds: 180
  predictorEnabled: true
  predictorAddress: http://localhost:8080
  predictorDirectAccess: false
  conditions:
  - type: Ready
    status: "True"
    reason: ManagedClusterReady
    message: managed cluster is ready.
    lastTransitionTime: "2026-05-01T10:00:00Z"
  - type: ClusterInit
    status: "True"
    reason: ClusterInitDisabled
    message: feature gate ClusterInit is not enabled
    lastTransitionTime: "2026-05-01T09:00:00Z"
"""

HELM_CHART = """
apiVersion: apps.clusternet.io/v1alpha1
kind: HelmChart
metadata: {name: redis, namespace: default}
spec:
  repo: oci://registry.example.com:5000/charts
  chart: redis
  version: 18.1.0
  targetNamespace: cache
  plainHTTP: true
"""

SUBSCRIPTION = """
apiVersion: apps.clusternet.io/v1alpha1
kind: Subscription
metadata: {name: web-app, namespace: default}
spec:
  schedulingStrategy: Dividing
  dividingScheduling: {type: Static}
  clusterTolerations:
  - {key: clusters.clusternet.io/initialization, operator: Exists, effect: NoSchedule}
  subscribers:
  - clusterAffinity: {matchLabels: {region: eu-west}}
    weight: 1
  - clusterAffinity: {matchLabels: {region: us-east}}
    weight: 4
  feeds:
  - {apiVersion: v1, kind: Namespace, name: web}
  - {apiVersion: apps/v1, kind: Deployment, name: web, namespace: web}
  - {apiVersion: apps.clusternet.io/v1alpha1, kind: HelmChart, name: redis, namespace: default}
status:
  bindingClusters: [clusternet-q8w4z/clusternet-cluster-x7k2p, clusternet-t2m9d/us-1]
  replicas:
    v1/Namespace/web: []
    apps/v1/Deployment/web/web: [1, 4]
    apps.clusternet.io/v1alpha1/HelmChart/default/redis: []
  specHash: 2793119450
  desiredReleases: 2
"""

LOCALIZATION = """
apiVersion: apps.clusternet.io/v1alpha1
kind: Localization
metadata: {name: web-eu-tuning, namespace: clusternet-q8w4z}
spec:
  priority: 700
  overridePolicy: ApplyNow
  feed: {apiVersion: apps/v1, kind: Deployment, name: web, namespace: web}
  overrides:
  - name: eu-image
    type: JSONPatch
    value: '[{"op":"replace","path":"/spec/template/spec/containers/0/image",
      "value":"registry.eu.example/web:1.2"}]'
"""

GLOBALIZATION = """
apiVersion: apps.clusternet.io/v1alpha1
kind: Globalization
metadata: {name: redis-small}
spec:
  priority: 400
  clusterAffinity: {matchLabels: {region: eu-west}}
  feed: {apiVersion: apps.clusternet.io/v1alpha1, kind: HelmChart, name: redis, namespace: default}
  overrides:
  - {name: values, type: Helm, value: "master:\\n  persistence:\\n    enabled: false\\n"}
  - {name: pin-version, type: Helm, overrideChart: true, value: "spec:\\n  version: 18.0.4\\n"}
"""

MANIFEST = """
apiVersion: apps.clusternet.io/v1alpha1
kind: Manifest
metadata:
  name: deployments.web.web
  namespace: clusternet-reserved
  labels:
    apps.clusternet.io/config.group: apps
    apps.clusternet.io/config.version: v1
    apps.clusternet.io/config.kind: Deployment
    apps.clusternet.io/config.name: web
    apps.clusternet.io/config.namespace: web
  finalizers: [apps.clusternet.io/finalizer, apps.clusternet.io/feed-protection]
template:
  apiVersion: apps/v1
  kind: Deployment
  metadata:
    name: web
    namespace: web
    labels: {clusternet.io/created-by: clusternet-hub}
  spec:
    replicas: 5
    selector: {matchLabels: {app: web}}
    template:
      metadata: {labels: {app: web}}
      spec:
        containers: [{name: web, image: "registry.example/web:1.2"}]
"""

FEED_INVENTORY = """
apiVersion: apps.clusternet.io/v1alpha1
kind: FeedInventory
metadata:
  name: web-app
  namespace: default
  labels: {apps.clusternet.io/subs.name: web-app, apps.clusternet.io/subs.namespace: default}
spec:
  feeds:
  - {apiVersion: v1, kind: Namespace, name: web, replicaRequirements: {resources: {}}}
  - apiVersion: apps/v1
    kind: Deployment
    name: web
    namespace: web
    desiredReplicas: 5
    replicaJsonPath: /spec/replicas
    replicaRequirements:
      nodeSelector: {kubernetes.io/os: linux}
      tolerations: [{key: gpu, operator: Exists, effect: NoSchedule}]
      resources:
        requests: {cpu: 100m, memory: 128Mi}
        limits: {cpu: "1", memory: 1Gi}
  - apiVersion: apps.clusternet.io/v1alpha1
    kind: HelmChart
    name: redis
    namespace: default
    replicaRequirements: {resources: {}}
"""

BASE = f"""
apiVersion: apps.clusternet.io/v1alpha1
kind: Base
metadata:
  name: web-app-b7kd2
  namespace: clusternet-q8w4z
  labels:
    apps.clusternet.io/config.kind: Subscription
    apps.clusternet.io/config.name: web-app
    apps.clusternet.io/config.namespace: default
    clusters.clusternet.io/cluster-id: {CLUSTER_ID}
  finalizers: [apps.clusternet.io/finalizer]
spec:
  feeds:
  - {{apiVersion: v1, kind: Namespace, name: web}}
  - {{apiVersion: apps/v1, kind: Deployment, name: web, namespace: web}}
  - {{apiVersion: apps.clusternet.io/v1alpha1, kind: HelmChart, name: redis, namespace: default}}
"""

DESCRIPTION_GENERIC = f"""
apiVersion: apps.clusternet.io/v1alpha1
kind: Description
metadata: {{name: web-app-b7kd2-generic, namespace: clusternet-q8w4z}}
spec:
  deployer: Generic
  raw:
  - {b64(compact({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}))}
  - {b64(compact(DEPLOYMENT_JSON))}
status:
  phase: Success
  manifestStatuses:
  - apiVersion: apps/v1
    kind: Deployment
    name: web
    namespace: web
    observedStatus: {{replicas: 1, readyReplicas: 1, availableReplicas: 1}}
"""

DESCRIPTION_HELM = f"""
apiVersion: apps.clusternet.io/v1alpha1
kind: Description
metadata: {{name: web-app-b7kd2-helm, namespace: clusternet-q8w4z}}
spec:
  deployer: Helm
  charts: [{{namespace: default, name: redis}}]
  chartRaw: [{b64(b'{"apiVersion":"apps.clusternet.io/v1alpha1","kind":"HelmChart"}')}]
  raw: [{b64(compact(VALUES_JSON))}]
"""

HELM_RELEASE = f"""
apiVersion: apps.clusternet.io/v1alpha1
kind: HelmRelease
metadata: {{name: web-app-b7kd2-helm-default-redis, namespace: clusternet-q8w4z}}
spec:
  repo: oci://registry.example.com:5000/charts
  chart: redis
  version: 18.0.4
  plainHTTP: true
  targetNamespace: cache
  releaseName: redis
  overrides: {b64(compact(VALUES_JSON))}
status:
  phase: deployed
  version: 1
  firstDeployed: "2026-05-01T10:05:00Z"
  lastDeployed: "2026-05-01T10:05:00Z"
  description: Install complete
"""

ALL_YAML = {
    "ClusterRegistrationRequest": CRR,
    "ManagedCluster": MANAGED_CLUSTER,
    "HelmChart": HELM_CHART,
    "Subscription": SUBSCRIPTION,
    "Localization": LOCALIZATION,
    "Globalization": GLOBALIZATION,
    "Manifest": MANIFEST,
    "FeedInventory": FEED_INVENTORY,
    "Base": BASE,
    "Description": DESCRIPTION_GENERIC,
    "Description/helm": DESCRIPTION_HELM,
    "HelmRelease": HELM_RELEASE,
}


def load(text: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(text)
    return obj


def all_examples() -> dict[str, dict[str, Any]]:
    return {name: load(text) for name, text in ALL_YAML.items()}
