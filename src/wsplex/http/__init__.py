"""Plain HTTP on the WebSocket port: the handshake decision, routes, metrics, admission."""
