"""The multiplexed agent-to-hub tunnel: a sans-IO protocol core and its asyncio session."""
