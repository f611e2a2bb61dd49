"""kubesim: a simulated Kubernetes API server for tests and the sandbox; not a real store."""
