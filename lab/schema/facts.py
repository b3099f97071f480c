"""The schema facts as objects: each message, command, payload and error body is a tree of ``Node``\\ s, and a
``Context`` says for which device they are read (platform, OS version, enrollment type, channel).

The data in ``data/*.json`` is derived from Apple's apple/device-management repository by scripts/derive-schema
(README.md, "Apple's schema facts", describes its shape). A key inherits its parent's per-OS facts and overrides
the ones it names, so a key left out of a context (not on the platform, not yet introduced, forbidden under User
Enrollment, ...) takes its whole subtree with it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import overload

# Our areas: which data file, and which part of an entry, each kind reads.
KINDS = {"checkin": ("checkin", "keys"), "checkin-reply": ("checkin", "reply"), "command": ("commands", "request"),
         "response": ("commands", "response"), "payload": ("payloads", "keys"), "error": ("errors", "keys"),
         "document": ("documents", "keys")}
PLATFORMS = ("iOS", "iPadOS", "macOS", "tvOS", "visionOS", "watchOS")
# The schema writes iPadOS facts under iOS.
SCHEMA_PLATFORM = {"iPadOS": "iOS"}
ENROLLMENTS = {"user": "account-driven User Enrollment", "profile-user": "profile-based User Enrollment",
               "adde": "account-driven Device Enrollment", "device": "Device Enrollment (profile-based)",
               "ade": "Automated Device Enrollment"}
# The lab's EnrollmentMode values and the discovery Versions name the same enrollment types.
ENROLLMENT_ALIASES = {"BYOD": "user", "ADDE": "adde", "mdm-byod": "user", "mdm-adde": "adde"}
CHANNELS = ("device", "user")
# The bits of the com.apple.mdm payload's AccessRights, by the names the schema gives the right a command or key
# needs ("None", "Special Case" and "n/a" need none).
ACCESS_RIGHTS = {"AllowInspection": 1, "AllowInstallationRemoval": 2, "AllowPasscodeRemovalAndLock": 4,
                 "DeviceLockAndRemovePasscode": 4, "AllowDeviceErase": 8, "AllowQueryDeviceInformation": 16,
                 "AllowQueryNetworkInformation": 32, "AllowProvisioningInspection": 64,
                 "AllowProvisioningInstallationRemoval": 128, "AllowQueryApplications": 256,
                 "QueryInstalledApps": 256, "AllowQueryRestrictions": 512, "AllowQuerySecurity": 1024,
                 "AllowSettings": 2048, "AllowAppInstallation": 4096}


class UnknownName(LookupError):
    """A kind or name the schema does not know."""


@dataclass(eq=False)
class Node:
    name: str
    type: str
    required: bool = False
    os: dict = field(default_factory=dict)
    wildcard: bool = False  # stands for any key name (a dictionary keyed by identifiers)
    values: list | None = None
    range: dict | None = None
    pattern: str | None = None
    keys: list[Node] = field(default_factory=list)
    item: Node | None = None
    choices: list[dict] | None = None  # a string's possible values, each with its own per-OS facts
    json: bool = False

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.type})"


def _build(raw: dict, stack: list[Node], later: list) -> Node:
    node = Node(raw["name"], raw["type"], bool(raw.get("required")), raw.get("os", {}), bool(raw.get("any")),
                raw.get("values"), raw.get("range"), raw.get("pattern"), choices=raw.get("choices"))
    if "same_as_parent" in raw:  # a recursive structure: resolved once its ancestor is complete
        later.append((node, stack[len(stack) - raw["same_as_parent"]]))
        return node
    stack.append(node)
    node.keys = [_build(k, stack, later) for k in raw.get("keys", ())]
    node.item = _build(raw["item"], stack, later) if "item" in raw else None
    stack.pop()
    return node


def build(raw: dict) -> Node:
    later: list = []
    node = _build(raw, [], later)
    for copy, original in later:
        copy.keys, copy.item, copy.choices = original.keys, original.item, original.choices
    return node


@cache
def area(name: str) -> dict:
    return json.loads(resources.files("lab.schema").joinpath("data", f"{name}.json").read_text())


@cache
def newest_known(platform: str) -> tuple[int, ...]:
    """The newest OS version of ``platform`` that the facts mention: a device newer than this may send keys and
    values Apple added since the facts were derived."""
    newest: tuple[int, ...] = (0,)

    def walk(node) -> None:
        nonlocal newest
        if isinstance(node, dict):
            since = (node.get("os") or {}).get(platform) if isinstance(node.get("os"), dict) else None
            if isinstance(since, dict) and since.get("since"):
                newest = max(newest, version(since["since"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for file in sorted({file for file, _ in KINDS.values()}):
        walk(area(file))
    return newest


def names(kind: str) -> list[str]:
    """Every name the schema knows for ``kind`` (MessageTypes, RequestTypes, PayloadTypes, error codes)."""
    if kind not in KINDS:
        raise UnknownName(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    file, part = KINDS[kind]
    return sorted(n for n, entry in area(file)["items"].items() if part in entry)


@cache
def root(kind: str, name: str | None) -> Node:
    """The tree for one message: a dictionary node whose ``os`` holds the entry's own per-OS facts.

    A command report carries the report keys of every command beside the command's own response keys; a payload
    carries the keys common to all payloads. ``response`` with name None is a report of no command (Idle)."""
    if kind not in KINDS:
        raise UnknownName(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    file, part = KINDS[kind]
    data = area(file)
    if kind == "response" and name is None:
        entry: dict = {"os": {p: {} for p in PLATFORMS if p not in SCHEMA_PLATFORM}, "response": []}
    else:
        entry = data["items"].get(name)
        if entry is None or part not in entry:
            raise UnknownName(f"Apple's schema has no {kind} named {name!r}")
    own = list(entry[part])
    if kind == "response":
        own = data["report_keys"] + own
    elif kind == "payload" and name != "Configuration":
        mine = {k["name"] for k in own}
        own = [k for k in data["common_keys"] if k["name"] not in mine] + own
    node = build({"name": name or "report", "type": "dictionary", "os": entry["os"], "keys": own})
    node.json = bool(entry.get("json"))  # a JSON document: its data values travel as base64 strings
    return node


def version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split("."):
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


@dataclass(frozen=True)
class Context:
    """The device a message is read for."""
    platform: str
    os_version: str
    enrollment: str = "device"
    channel: str = "device"
    supervised: bool | None = None  # None: as the enrollment type implies (only ADE supervises)
    shared_ipad: bool = False
    access_rights: int | None = None  # the MDM payload's AccessRights; None: not limited (or not applicable)

    def __post_init__(self):
        if self.platform not in PLATFORMS:
            raise ValueError(f"unknown platform {self.platform!r}; one of {', '.join(PLATFORMS)}")
        object.__setattr__(self, "enrollment", ENROLLMENT_ALIASES.get(self.enrollment, self.enrollment))
        if self.enrollment not in ENROLLMENTS:
            raise ValueError(f"unknown enrollment {self.enrollment!r}; one of {', '.join(ENROLLMENTS)}")
        if self.channel not in CHANNELS:
            raise ValueError(f"unknown channel {self.channel!r}; one of {', '.join(CHANNELS)}")
        if self.supervised is None:
            object.__setattr__(self, "supervised", self.enrollment == "ade")
        object.__setattr__(self, "os_version", str(self.os_version))
        version(self.os_version)

    @property
    def schema_platform(self) -> str:
        return SCHEMA_PLATFORM.get(self.platform, self.platform)

    @property
    def user_enrollment(self) -> bool:
        return self.enrollment in ("user", "profile-user")

    @property
    def account_driven(self) -> bool:
        return self.enrollment in ("user", "adde")

    def ue_mode(self, facts: dict) -> str:
        """The key's User Enrollment mode; account-driven User Enrollment has a few rules of its own ("adue")."""
        if self.enrollment == "user" and "adue" in facts:
            return facts["adue"]
        return facts.get("ue", "allowed")

    def lacks_right(self, facts: dict) -> str | None:
        """The access right the facts need and the MDM payload did not grant, or None."""
        bit = ACCESS_RIGHTS.get(facts.get("access_right", ""))
        if self.access_rights is None or bit is None or self.access_rights & bit:
            return None
        return facts["access_right"]

    def label(self) -> str:
        return (f"{self.platform} {self.os_version}, {ENROLLMENTS[self.enrollment]}"
                + (", Shared iPad" if self.shared_ipad else "") + f", {self.channel} channel")


@overload
def effective(parent: dict, node: Node, ctx: Context) -> dict: ...
@overload
def effective(parent: None, node: Node, ctx: Context) -> dict | None: ...
def effective(parent: dict | None, node: Node, ctx: Context) -> dict | None:
    """The node's facts on the context's platform: the parent's, updated by the node's own. None: not on it."""
    own = node.os.get(ctx.schema_platform)
    if parent is None:
        return None if own is None else dict(own)
    return {**parent, **own} if own else parent
