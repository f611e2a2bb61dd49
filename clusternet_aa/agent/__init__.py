"""clusternet-agent: registration, heartbeats and the tunnel client of a child cluster."""
