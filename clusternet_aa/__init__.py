"""clusternet-aa: manage many Kubernetes clusters from one place, as if they were local."""

__version__ = "0.1.0"
