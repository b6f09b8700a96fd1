"""Logging as the operator asked for it: ``--log-level``, ``--log-format text|json``, ``-d``.

A JSON line is one object: ``time`` (UTC, ISO 8601 with milliseconds),
``level``, ``logger``, ``message``, and for a record about a connection its
``conn`` (the session id), ``remote`` and ``protocol``; an HTTP record adds
``status`` and ``path``; a traceback is ``traceback``. A record says which
connection it is about with ``extra=connection_fields(session)``, or by
passing the session itself as one of its arguments (``log.info("... %s",
session)``), which the formatter recognises.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from wsplex.app.session import Session

#: Record attributes a JSON line carries when a record has them.
FIELDS = ("conn", "remote", "protocol", "status", "path")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def connection_fields(session: Session) -> dict[str, Any]:
    """``extra=`` for a record about ``session``."""
    return {"conn": session.id, "remote": session.remote, "protocol": session.protocol}


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if "conn" not in line:
            session = _session_among(record.args)
            if session is not None:
                line.update(connection_fields(session))
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def _session_among(args: Any) -> Session | None:
    if isinstance(args, tuple):
        return next((arg for arg in args if isinstance(arg, Session)), None)
    return None


def configure(level: str = "info", form: str = "text", debug: bool = False) -> None:
    """Root logging to stderr; ``debug`` (``-d``) is ``--log-level debug``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if form == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else LEVELS[level])
    if not debug and level != "debug":
        logging.getLogger("wsplex.picows").setLevel(logging.WARNING)
