"""The aggregated API server of the hub: authn, authz, discovery, health, metrics."""
