"""Sans-IO tunnel protocol: bytes in, events and bytes out. No asyncio, no sockets."""
