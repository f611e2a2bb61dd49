"""Hub-side forwarding, agent-side executor, identity mapping and upgrade relay."""
