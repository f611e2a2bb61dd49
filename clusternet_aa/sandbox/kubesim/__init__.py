"""kubesim: a simulated Kubernetes API server for tests and the sandbox, never a production store."""
