"""A stand-in for the MDM's HTTP side that records every message the device sends and hands out commands: the
device's own check-in and command channel run unchanged against it (no lab needed)."""
from __future__ import annotations

import json
import plistlib
from dataclasses import dataclass, field


@dataclass
class Reply:
    status_code: int = 200
    content: bytes = b""
    headers: dict = field(default_factory=dict)

    @property
    def is_redirect(self) -> bool:
        return False

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self):
        return json.loads(self.content)


@dataclass
class Sent:
    url: str
    content_type: str
    message: dict
    command: str | None = None  # the RequestType this message reports on (None: a check-in or an Idle poll)


class RecordingMDM:
    def __init__(self, commands: list[dict] = ()):
        self.queue = [{"CommandUUID": f"C-{i:04d}", "Command": command} for i, command in enumerate(commands)]
        self.handed: dict[str, str] = {}
        self.sent: list[Sent] = []

    def request(self, method, url, headers=None, data=None, **kwargs) -> Reply:
        message = plistlib.loads(data)
        command = self.handed.get(message.get("CommandUUID"))
        self.sent.append(Sent(url, (headers or {}).get("Content-Type", ""), message, command))
        if "MessageType" in message or not self.queue:
            return Reply()
        envelope = self.queue.pop(0)
        self.handed[envelope["CommandUUID"]] = envelope["Command"]["RequestType"]
        return Reply(200, plistlib.dumps(envelope))

    def put(self, url, data=None, headers=None, **kwargs) -> Reply:
        return self.request("PUT", url, headers=headers, data=data)

    def close(self) -> None:
        pass
