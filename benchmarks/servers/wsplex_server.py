"""wsplex as a user runs it (``wsplex`` command line), with the descriptor limit raised.

Every feature stays on (keepalive, limits, stats, slow-consumer cap). ``run.py``
raises two limits past what one benchmark client does: ``--max-messages-per-second``
(a closed-loop client sends faster than the 10,000/s default) and
``--max-connections-per-ip`` (10,000 idle connections all come from 127.0.0.1).
"""

from __future__ import annotations

import sys

from _common import raise_fd_limit

from wsplex.cli import main

if __name__ == "__main__":
    raise_fd_limit()
    main(["--host", "127.0.0.1", *sys.argv[1:]])
