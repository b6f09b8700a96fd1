"""The only code that imports picows: listener, connection adapter, write coalescing."""
