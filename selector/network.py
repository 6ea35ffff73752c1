"""The one network probe: offline, every download path fails within seconds instead of after minutes."""
from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request

NET_TIMEOUT_S = 3.0


def host_reachable(host: str, port: int = 443, *, timeout: float = NET_TIMEOUT_S) -> bool:
    """True when a TCP connection to host:port opens within `timeout` seconds. Runs in a thread because DNS
    lookups ignore socket timeouts."""
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
