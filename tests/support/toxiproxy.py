"""A client of Toxiproxy's HTTP API (the server started by infra/local/toxiproxy.sh): proxies
between the worker and a service, and the toxics that make the wire fail.

Used by the nemesis (tests/support/nemesis.py); a call that the server refuses raises
ToxiproxyError with its answer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


class ToxiproxyError(RuntimeError):
    """The Toxiproxy server refused a call, or did not answer."""


class Toxiproxy:
    """One Toxiproxy server, by the port of its API. Cheap: every call is one HTTP request."""

    def __init__(self, api_port: int, host: str = "127.0.0.1"):
        self.base = f"http://{host}:{api_port}"

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise ToxiproxyError(f"toxiproxy {method} {path}: {exc.code} {exc.read().decode(errors='replace')[:300]}") from exc
        except OSError as exc:
            raise ToxiproxyError(f"toxiproxy {method} {path}: {exc}") from exc
        return json.loads(raw) if raw.strip() else None

    def create(self, name: str, listen_port: int, upstream: str) -> None:
        """A proxy listening on 127.0.0.1:listen_port that forwards to `upstream` (host:port);
        an existing proxy of that name is replaced."""
        if name in (self._call("GET", "/proxies") or {}):
            self._call("DELETE", f"/proxies/{name}")
        self._call("POST", "/proxies", {"name": name, "listen": f"127.0.0.1:{listen_port}", "upstream": upstream,
                                        "enabled": True})

    def add_toxic(self, proxy: str, kind: str, stream: str = "downstream", **attributes) -> str:
        """A toxic on one direction of a proxy ("downstream": from the service to the client);
        returns its name (remove it with `remove_toxic`)."""
        name = f"{kind}_{stream}"
        self._call("POST", f"/proxies/{proxy}/toxics", {"name": name, "type": kind, "stream": stream,
                                                         "toxicity": 1.0, "attributes": attributes})
        return name

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def set_enabled(self, proxy: str, enabled: bool) -> None:
        """Disabled: the proxy closes its connections and refuses new ones (the service is down,
        as a client sees it)."""
        self._call("POST", f"/proxies/{proxy}", {"enabled": enabled})

    def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        self._call("POST", "/reset")
