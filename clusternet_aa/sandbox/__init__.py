"""Local stand-ins for Kubernetes (kubesim) and the one-command sandbox."""
