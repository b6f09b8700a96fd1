"""RFC 6455 without I/O: frames, message assembly, close codes.

Bytes and events in, bytes and decisions out: nothing here imports asyncio,
a socket or the WebSocket library, so every wire rule is tested byte for byte.
"""
