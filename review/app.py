"""The FiftyOne App on a review dataset: its server on one address and port, until interrupted.

``remote`` is FiftyOne's remote session (``fiftyone app launch --remote``): no browser is opened
here; a reviewer forwards the port from their own machine (``ssh -N -L PORT:127.0.0.1:PORT HEAD``)
and opens the URL there. The App has no login: bind it to loopback, and to another address only
behind a firewall or an authenticating proxy.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

from review.dataset import WORKSPACE, fiftyone, open_dataset

DEFAULT_PORT = 5151  # FiftyOne's own default


def start_app(name: str, port: int = DEFAULT_PORT, address: str = "127.0.0.1", remote: bool = False):
    """Start the App's server on ``name`` and return the FiftyOne session (``session.url`` is the page)."""
    fo = fiftyone()
    dataset = open_dataset(name)
    spaces = dataset.load_workspace(WORKSPACE) if dataset.has_workspace(WORKSPACE) else None
    # fo.Session, not fo.launch_app: the latter also writes a welcome note under ~/.fiftyone.
    return fo.Session(dataset, spaces=spaces, port=port, address=address, remote=remote, auto=False)


def serve(name: str, port: int = DEFAULT_PORT, address: str = "127.0.0.1", remote: bool = False,
          announce: Callable[[str], None] = print) -> None:
    """Start the App and serve until Ctrl-C (or SIGTERM); ``announce`` gets the lines that say where it is.

    Either signal closes the session, which stops the App's server: a server left behind by a killed
    command would keep the port.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    session = start_app(name, port, address, remote)
    url = f"http://{address}:{port}/"
    announce(f"FiftyOne App on {name!r}: {url}  (Ctrl-C stops it)")
    if remote:
        announce(f"remote: from your machine run `ssh -N -L {port}:{address}:{port} USER@THIS_HOST` "
                 f"(or `fiftyone app connect --destination USER@THIS_HOST --port {port}`), then open "
                 f"http://localhost:{port}/")
    try:
        session.wait(-1)
    except KeyboardInterrupt:
        pass
    finally:
        session.close()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
