"""The plugin API: everything a protocol author imports (SPEC §7).

A protocol imports ``wsplex.app`` and nothing else of wsplex.
"""

from wsplex.app.outgoing import Outgoing
from wsplex.app.protocol import Context, HookResult, Protocol
from wsplex.app.session import Session
from wsplex.ws.close import CloseCode

__all__ = ["CloseCode", "Context", "HookResult", "Outgoing", "Protocol", "Session"]
