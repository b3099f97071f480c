"""The CLI's client for the running lab's control API (the console), found through lab.json."""
from __future__ import annotations

from pathlib import Path

import requests

from lab import config
from lab.net import lab_session


class ControlError(RuntimeError):
    """One line saying what the lab refused, or why it could not be reached."""


class _ListenAddress:
    """Every name → the address the lab listens on: the console is asked as ``localhost`` (SNI, Host and the
    certificate's name) wherever the lab listens, 127.0.0.1 or a LAN address, and without its DNS."""

    def __init__(self, address: str):
        self.address = address

    def resolve(self, host: str) -> str:
        return self.address


class ControlClient:
    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.info = config.read_lab_file(self.state_dir)
        self.base = f"https://localhost:{self.info['https_port']}"
        listen = self.info.get("listen") or self.info.get("dns_address") or "127.0.0.1"
        self.session = lab_session(_ListenAddress(listen), self.info["ca_cert"])
        token_file = self.state_dir / config.ADMIN_TOKEN_FILE
        if token_file.exists():
            self.session.headers["Authorization"] = f"Bearer {token_file.read_text().strip()}"

    def request(self, method: str, path: str, **kwargs):
        try:
            response = self.session.request(method, self.base + path, timeout=10, **kwargs)
        except requests.RequestException as exc:
            raise ControlError(f"cannot reach the lab's console at {self.base}: {exc.__class__.__name__}; "
                               "is 'mdmlab up' still running?") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                message = f"{body.get('error')}: {body.get('message')}"
            except ValueError:
                message = response.text.strip()[:200]
            raise ControlError(f"the lab refused {method} {path} ({response.status_code}): {message}")
        return response.json()

    def close(self) -> None:
        self.session.close()
