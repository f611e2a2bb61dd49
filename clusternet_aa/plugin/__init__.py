"""``kubectl clusternet``: the logic of the kubectl plugin (the CLI is ``cli/kubectl_clusternet``).

Every call to the parent goes through real kubectl (``kubectl config view``, ``kubectl get``,
``kubectl get --raw``), so the plugin honours whatever the user's kubeconfig does: exec and OIDC
credential plugins, proxies, ``--kubeconfig``, ``--context``.
"""

PROXY_PATH = "/apis/proxies.clusternet.io/v1alpha1/sockets/{cluster_id}/proxy/direct"
