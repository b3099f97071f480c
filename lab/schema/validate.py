"""Check a message against the schema facts for one device, and list the keys a device may send.

Each ``Problem`` names the key (a path such as ``ProfileList[0].PayloadContent[1].PayloadUUID``), a
machine-readable code and one line that tells an MDM developer what is wrong. ``severity`` is ``error`` for what a
real device would never send or a server must not send, ``warning`` for what is allowed but has no effect
(deprecated, ignored under User Enrollment, supervised-only keys on an unsupervised device, an unknown query).
"""
from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from functools import cached_property

from lab.schema.facts import ENROLLMENTS, Context, Node, UnknownName, effective, root, version

CODES = ("unknown-name", "missing-required", "unknown-key", "wrong-type", "value-not-allowed", "out-of-range",
         "not-on-platform", "not-yet-introduced", "removed", "forbidden-under-user-enrollment",
         "only-under-user-enrollment", "forbidden-on-shared-ipad", "only-on-shared-ipad", "not-on-channel",
         "needs-supervision", "needs-ade", "needs-access-right", "deprecated", "ignored-under-user-enrollment",
         "unknown-value")
_PYTHON_TYPES = {"string": (str,), "integer": (int,), "real": (float, int), "boolean": (bool,),
                 "data": (bytes, bytearray), "date": (datetime.datetime,), "array": (list, tuple),
                 "dictionary": (dict,)}
_ARTICLE = {"integer": "an integer", "array": "an array"}
_WHAT = {"checkin": "the check-in message", "checkin-reply": "the reply to the check-in message",
         "command": "the command", "response": "the report of the command", "payload": "the payload",
         "error": "the error body", "document": "the document"}


@dataclass(frozen=True)
class Problem:
    path: str
    code: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.path or '(message)'}: {self.message}"


def _type_name(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    for name in ("integer", "string", "data", "date", "array", "dictionary"):
        if isinstance(value, _PYTHON_TYPES[name]):
            return name
    return "real" if isinstance(value, float) else type(value).__name__


def _gate(facts: dict | None, what: str, ctx: Context, own: dict | None) -> tuple[str, str] | None:
    """Why a thing with these facts cannot be in a message of this context, or None when it can."""
    platform = ctx.platform
    if facts is None or ("since" in facts and facts["since"] is None):
        return "not-on-platform", f"{what} does not exist on {platform} in Apple's schema; leave it out"
    now = version(ctx.os_version)
    since, removed = facts.get("since"), facts.get("removed")
    if since and now < version(since):
        return "not-yet-introduced", (f"{what} exists from {platform} {since} on and this device runs "
                                      f"{ctx.os_version}; leave it out")
    if removed and now >= version(removed):
        return "removed", f"{what} was removed in {platform} {removed} (this device runs {ctx.os_version})"
    mode = ctx.ue_mode(facts)
    if ctx.user_enrollment and mode == "forbidden":
        return "forbidden-under-user-enrollment", (f"{what} is forbidden under User Enrollment on {platform}; "
                                                   "leave it out")
    if not ctx.user_enrollment and mode == "required":
        return "only-under-user-enrollment", (f"{what} belongs to User Enrollment only; a "
                                              f"{ENROLLMENTS[ctx.enrollment]} does not use it")
    shared = facts.get("shared_ipad")
    if ctx.shared_ipad and shared == "forbidden":
        return "forbidden-on-shared-ipad", f"{what} is forbidden on a Shared iPad"
    if not ctx.shared_ipad and shared == "required":
        return "only-on-shared-ipad", f"{what} belongs to Shared iPad only; leave it out on this device"
    prefix = "shared_ipad_" if ctx.shared_ipad else ""
    allowed = facts.get(f"{prefix}{ctx.channel}_channel", ctx.channel == "device")
    if not allowed:
        return "not-on-channel", f"{what} is not sent on the {ctx.channel} channel on {platform}"
    right = ctx.lacks_right(facts)
    if right:
        return "needs-access-right", (f"{what} needs the access right {right}, which the MDM payload's "
                                      f"AccessRights ({ctx.access_rights}) does not grant")
    rules = facts if own is None else own
    if rules.get("supervised") and not ctx.supervised:
        return "needs-supervision", (f"{what} needs a supervised device; a {ENROLLMENTS[ctx.enrollment]} "
                                     f"of this {platform} device is unsupervised")
    if rules.get("ade_only") and ctx.enrollment != "ade":
        return "needs-ade", f"{what} needs Automated Device Enrollment; this is a {ENROLLMENTS[ctx.enrollment]}"
    return None


def _notes(facts: dict, what: str, ctx: Context) -> list[tuple[str, str]]:
    out = []
    deprecated = facts.get("deprecated")
    if deprecated and version(ctx.os_version) >= version(deprecated):
        out.append(("deprecated", f"{what} is deprecated since {ctx.platform} {deprecated}"))
    if ctx.user_enrollment and ctx.ue_mode(facts) == "ignored":
        out.append(("ignored-under-user-enrollment", f"{what} is ignored under User Enrollment on {ctx.platform}"))
    return out


# Key-level supervision and ADE rules only make a key ignored, not the message wrong.
_KEY_WARNINGS = ("needs-supervision", "needs-ade")


class _Walk:
    def __init__(self, ctx: Context, problems: list[Problem], json_body: bool = False):
        self.ctx, self.problems, self.json_body = ctx, problems, json_body

    def add(self, path: str, code: str, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(path, code, message, severity))

    def key_gate(self, node: Node, parent: dict, path: str) -> tuple[dict, tuple[str, str] | None]:
        facts = effective(parent, node, self.ctx)
        own = node.os.get(self.ctx.schema_platform) or {}
        return facts, _gate(facts, path, self.ctx, own)

    def dictionary(self, node: Node, facts: dict, value: dict, path: str, optional: frozenset = frozenset(),
                   needed: frozenset = frozenset()) -> None:
        if not node.keys:
            return  # a dictionary whose contents the schema leaves open
        named = {k.name: k for k in node.keys if not k.wildcard}
        wildcard = next((k for k in node.keys if k.wildcard), None)
        for name, key in named.items():
            sub = f"{path}.{name}" if path else name
            kfacts, blocked = self.key_gate(key, facts, sub)
            if name in value:
                if blocked and blocked[0] in _KEY_WARNINGS:
                    self.add(sub, *blocked, severity="warning")
                elif blocked:
                    self.add(sub, *blocked)
                    continue
                for code, message in _notes(key.os.get(self.ctx.schema_platform) or {}, sub, self.ctx):
                    self.add(sub, code, message, "warning")
                self.value(key, kfacts, value[name], sub)
            elif blocked is None and name not in optional and (name in needed or _required(key, kfacts, self.ctx)):
                self.add(sub, "missing-required", f"{sub} ({key.type}) is required on {self.ctx.label()} but "
                         "missing")
        for name in value:
            if name in named:
                continue
            sub = f"{path}.{name}" if path else str(name)
            if wildcard is None:
                self.add(sub, "unknown-key", f"{sub} is not a key of {path or node.name} in Apple's schema")
                continue
            kfacts, blocked = self.key_gate(wildcard, facts, sub)
            if blocked and blocked[0] not in _KEY_WARNINGS:
                self.add(sub, *blocked)
            else:
                self.value(wildcard, kfacts, value[name], sub)

    def value(self, node: Node, facts: dict, value, path: str) -> None:
        expected = _PYTHON_TYPES.get(node.type)
        if node.type == "data" and self.json_body:
            expected = (str,)
            try:
                base64.b64decode(value, validate=True) if isinstance(value, str) else None
            except ValueError:
                self.add(path, "wrong-type", f"{path} must be base64 data, not a plain string")
                return
        if expected and (not isinstance(value, expected) or (isinstance(value, bool) and node.type != "boolean")):
            article = _ARTICLE.get(node.type, f"a {node.type}")
            self.add(path, "wrong-type", f"{path} must be {article}, not {_type_name(value)}")
            return
        if node.values is not None and not isinstance(value, (dict, list, tuple)) and value not in node.values:
            allowed = ", ".join(map(repr, node.values))
            self.add(path, "value-not-allowed", f"{path} is {value!r}; Apple's schema allows {allowed}")
        if node.range and isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high = node.range.get("min"), node.range.get("max")
            if (low is not None and value < low) or (high is not None and value > high):
                self.add(path, "out-of-range", f"{path} is {value}; Apple's schema allows {low} to {high}")
        if node.choices is not None and isinstance(value, str):
            if value not in {c["name"] for c in node.choices}:
                self.add(path, "unknown-value", f"{path} is {value!r}, which Apple's schema does not list",
                         "warning")
        if node.type == "dictionary":
            self.dictionary(node, facts, value, path)
        elif node.type == "array" and node.item is not None:
            ifacts = effective(facts, node.item, self.ctx)
            for i, item in enumerate(value):
                self.value(node.item, ifacts, item, f"{path}[{i}]")


def _required(node: Node, facts: dict, ctx: Context) -> bool:
    return node.required or (ctx.user_enrollment and ctx.ue_mode(facts) == "required") \
        or (ctx.account_driven and facts.get("account_driven") == "required") \
        or (ctx.shared_ipad and facts.get("shared_ipad") == "required")


def supported(kind: str, name: str, **context) -> list[Problem]:
    """Why this device cannot take or send ``name`` at all (empty when it can): the entry's own facts only.
    ``context``: the keywords of ``Context`` (platform, os_version, enrollment, channel, ...)."""
    ctx, (node, unknown) = Context(**context), _lookup(kind, name)
    if unknown:
        return [unknown]
    assert node is not None  # _lookup gives a node or the problem
    return _entry(kind, name, node, ctx)


def _lookup(kind: str, name: str | None) -> tuple[Node | None, Problem | None]:
    try:
        return root(kind, name), None
    except UnknownName as exc:
        return None, Problem("", "unknown-name", str(exc))


def _entry(kind: str, name: str | None, node: Node, ctx: Context) -> list[Problem]:
    facts = effective(None, node, ctx)
    what = f"{_WHAT[kind]} {name}" if name else _WHAT[kind]
    blocked = _gate(facts, what, ctx, None)
    if blocked:
        return [Problem("", *blocked)]
    assert facts is not None  # _gate blocks an entry without facts on the platform
    return [Problem("", code, message, "warning") for code, message in _notes(facts, what, ctx)]


def check(kind: str, name: str | None, message, **context) -> list[Problem]:
    """Every way ``message`` departs from Apple's schema for this device (empty: it conforms).

    kind: checkin (a check-in message, by MessageType), checkin-reply (the server's answer to GetToken or
    GetBootstrapToken), command (the Command dictionary, by RequestType), response (the device's whole report to
    that command, Status and identifiers included; name None for an Idle poll), payload (by PayloadType;
    ``Configuration`` is a whole profile, its PayloadContent checked payload by payload), error (by code),
    document (MachineInfo: the device's enrollment request; EnrollmentSSODocument).
    ``context``: the keywords of ``Context`` (platform, os_version, enrollment, channel, ...)."""
    ctx, (node, unknown) = Context(**context), _lookup(kind, name)
    if unknown:
        return [unknown]
    assert node is not None  # _lookup gives a node or the problem
    problems = _entry(kind, name, node, ctx)
    if any(p.severity == "error" for p in problems):
        return problems
    if not isinstance(message, dict):
        return problems + [Problem("", "wrong-type", f"{_WHAT[kind]} must be a dictionary, not "
                                   f"{_type_name(message)}")]
    walk: _Walk = _Walk(ctx, problems, node.json)
    optional: frozenset[str] = frozenset()
    needed: frozenset[str] = frozenset()
    if kind == "response":
        status = message.get("Status")
        own = frozenset(k.name for k in node.keys[len(root("response", None).keys):])
        optional = own if status != "Acknowledged" else frozenset()  # results come with Acknowledged only
        needed = frozenset({"CommandUUID"}) if status != "Idle" else frozenset()
    facts = effective(None, node, ctx)
    assert facts is not None  # _entry found no error, so the entry exists on the platform
    walk.dictionary(node, facts, message, "", optional, needed)
    if kind == "payload" and name == "Configuration" and isinstance(message.get("PayloadContent"), list):
        for i, payload in enumerate(message["PayloadContent"]):
            path = f"PayloadContent[{i}]"
            if not isinstance(payload, dict) or not isinstance(payload.get("PayloadType"), str):
                continue  # the walk above already named what is wrong with it
            for p in check("payload", payload["PayloadType"], payload, **context):
                sub = f"{path}.{p.path}" if p.path else path
                problems.append(Problem(sub, p.code, p.message if p.path else f"{path} ({payload['PayloadType']}): "
                                        f"{p.message}", p.severity))
    return problems


class Key:
    """One key a device may send in a context: its type, whether it must be there, and what it may hold."""

    def __init__(self, node: Node, facts: dict, ctx: Context, required: bool):
        self.node, self.facts, self.ctx, self.required = node, facts, ctx, required
        self.name, self.type, self.values, self.wildcard = node.name, node.type, node.values, node.wildcard

    def __repr__(self) -> str:
        return f"Key({self.name!r}, {self.type}{', required' if self.required else ''})"

    @cached_property
    def keys(self) -> dict[str, Key]:
        """A dictionary's keys available in the context (a wildcard key stands for any name)."""
        return _available(self.node, self.facts, self.ctx)

    @cached_property
    def item(self) -> Key | None:
        if self.node.item is None:
            return None
        return Key(self.node.item, effective(self.facts, self.node.item, self.ctx), self.ctx, True)

    @cached_property
    def choices(self) -> tuple[str, ...]:
        """A string's possible values available in the context (e.g. DeviceInformation's queries)."""
        out = []
        for choice in self.node.choices or ():
            probe = Node(choice["name"], self.type, os=choice.get("os", {}))
            facts = effective(self.facts, probe, self.ctx)
            if _gate(facts, choice["name"], self.ctx, probe.os.get(self.ctx.schema_platform) or {}) is None:
                out.append(choice["name"])
        return tuple(out)


def _available(node: Node, facts: dict, ctx: Context) -> dict[str, Key]:
    out = {}
    for key in node.keys:
        kfacts = effective(facts, key, ctx)
        blocked = _gate(kfacts, key.name, ctx, key.os.get(ctx.schema_platform) or {})
        if blocked is None:
            out[key.name] = Key(key, kfacts, ctx, _required(key, kfacts, ctx))
    return out


def keys_for(kind: str, name: str | None, **context) -> dict[str, Key]:
    """The keys a message of ``kind``/``name`` may carry on this device, each with ``required``; empty when the
    device cannot send or take it at all (see ``supported``). Raises UnknownName for a name the schema lacks.
    ``context``: the keywords of ``Context`` (platform, os_version, enrollment, channel, ...)."""
    ctx = Context(**context)
    node = root(kind, name)
    if any(p.severity == "error" for p in _entry(kind, name, node, ctx)):
        return {}
    facts = effective(None, node, ctx)
    assert facts is not None  # _entry found no error, so the entry exists on the platform
    keys = _available(node, facts, ctx)
    if kind == "response" and "CommandUUID" in keys:
        keys["CommandUUID"].required = True
    return keys


def introduced(kind: str, name: str, key: str, platform: str) -> str | None:
    """The OS version of ``platform`` in which the top-level ``key`` of ``name`` came, None when it never exists
    there (e.g. MachineInfo's OS_VERSION: iOS 17.0). A key without its own version came with its message."""
    ctx = Context(platform, "0")
    node = root(kind, name)
    facts = effective(None, node, ctx)
    found = next((k for k in node.keys if k.name == key), None)
    if facts is None or found is None:
        return None
    since = effective(facts, found, ctx).get("since")
    return str(since) if since else None
