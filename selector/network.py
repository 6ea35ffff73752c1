"""The one network probe: offline, every download path fails within seconds instead of after minutes.
SELECTOR_OFFLINE=1 (for a shared server) makes every host unreachable, so nothing is ever downloaded."""
from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request

NET_TIMEOUT_S = 3.0
OFFLINE_ENV = "SELECTOR_OFFLINE"


def downloads_off() -> bool:
    """True when SELECTOR_OFFLINE is set (to anything but 0): no model weights or datasets are downloaded."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def host_reachable(host: str, port: int = 443, *, timeout: float = NET_TIMEOUT_S) -> bool:
    """True when a TCP connection to host:port opens within `timeout` seconds. Runs in a thread because DNS
    lookups ignore socket timeouts. Always False when downloads are off (SELECTOR_OFFLINE)."""
    if downloads_off():
        return False
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            pass
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result)


def url_reachable(url: str, timeout: float = NET_TIMEOUT_S) -> bool:
    """True when url's host (or the proxy for its scheme) accepts a TCP connection within `timeout` seconds."""
    proxy = urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme)
    u = urllib.parse.urlsplit(proxy or url)
    return host_reachable(u.hostname, u.port or (443 if u.scheme == "https" else 80), timeout=timeout)
