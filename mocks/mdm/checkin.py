"""The MDM's two device channels after enrollment (PROTOCOL.md 3.3-4): check-in messages on CheckInURL, routed by
MessageType, and the command poll on ServerURL (reports in, the next command out). Every body goes through one
plist parser that refuses what it cannot bound (lab.plists) with a 400 that says why."""
from __future__ import annotations

import plistlib
from dataclasses import dataclass

from lab import plists
from mocks.mdm import maid, validation
from mocks.mdm.commands import REPORT_STATUSES, CommandQueue
from mocks.mdm.errors import BadCheckIn, BadReport, TokenBoundElsewhere, UnknownEnrollment, UnrecognizedDevice
from mocks.mdm.tokens import TokenInfo, bearer_of

FORBIDDEN_BYOD_KEYS = ("UDID", "SerialNumber", "IMEI", "MEID", "UnlockToken")


def parse_plist(body: bytes, error: type, what: str) -> dict:
    """The dictionary of a plist body, or ``error`` (a 400) naming ``what`` and the reason."""
    try:
        return plists.load_dict(body)
    except plists.PlistRefused as exc:
        code = None if exc.code in ("not-a-plist", "not-a-dictionary") else exc.code  # else: which bound
        raise error(f"{what} was refused: {exc.message}", code=code) from None


def parse_checkin_body(body: bytes) -> dict:
    message = parse_plist(body, BadCheckIn, "the check-in body")
    if not isinstance(message.get("MessageType"), str):
        raise BadCheckIn("the check-in message needs a MessageType string")
    return message


def parse_report(body: bytes) -> dict:
    """A device's PUT to ServerURL: Idle, or the result of the last command (Status, CommandUUID, ...)."""
    report = parse_plist(body, BadReport, "the command report")
    if report.get("Status") not in REPORT_STATUSES:
        raise BadReport(f"the report needs Status, one of {', '.join(REPORT_STATUSES)}", code="bad-status")
    if report["Status"] != "Idle" and not isinstance(report.get("CommandUUID"), str):
        raise BadReport(f"a {report['Status']} report needs the CommandUUID it answers", code="missing-command-uuid")
    return report


@dataclass(frozen=True)
class Exchange:
    """One check-in or poll, done: what the timeline records and the reply to send."""
    enrollment_id: str
    user: str
    kind: str | None  # the MessageType, or the RequestType a report answered (None: Idle)
    summary: str
    reply: bytes = b""


def _quiet(**facts) -> None:
    pass


class Channel:
    def __init__(self, setup, store, tokens, signin, commands: CommandQueue, signer: maid.MAIDSigner, clock):
        self.setup, self.store, self.tokens, self.signin = setup, store, tokens, signin
        self.commands, self.maid, self.clock = commands, signer, clock
        self.checker = None  # the schema check (tests hand in their own); None: lab.schema's
        self.server_uuid = ""  # ABM's server_uuid, learnt when the MDM registers (AccountDetail)

    def enrollment(self, enrollment_id: str) -> dict | None:
        row = self.store.one("SELECT enrollment_id, user, mode, topic, status, push_magic, created, updated,"
                             " enrollment_user_id, last_seen, product, os_version FROM enrollments"
                             " WHERE enrollment_id = ?",
                             (enrollment_id,))
        return dict(row) if row else None

    # -- check-in (3.3, 4) -------------------------------------------------------------------------------------
    def check_in(self, authorization: str | None, body: bytes, note=_quiet) -> Exchange:
        """Apply one check-in message. The token is checked first; ``note(**facts)`` hears the account,
        MessageType and EnrollmentID as soon as each is known, so a refusal is recorded with them too."""
        try:
            message, bad_body = parse_checkin_body(body), None
        except BadCheckIn as exc:
            message, bad_body = {}, exc
        # The device sends CheckOut once and cannot re-authenticate: accept its enrollment's expired token
        # (PROTOCOL.md 4.6); the binding to the same EnrollmentID/UDID is still checked below.
        token = self.signin.ongoing_token(authorization, allow_expired=message.get("MessageType") == "CheckOut")
        note(device=token.user, user=token.user)
        if bad_body is not None:
            raise bad_body
        kind = message["MessageType"]
        note(message_type=kind)
        handler = {"Authenticate": self._authenticate, "TokenUpdate": self._token_update,
                   "CheckOut": self._check_out, "GetToken": self._get_token}.get(kind)
        if handler is None:
            raise BadCheckIn(f"MessageType {kind!r} is not supported", code="unknown-message-type")
        if kind != "GetToken" and message.get("Topic") != self.setup.topic:
            raise BadCheckIn(f"Topic {message.get('Topic')!r} is not this MDM's topic {self.setup.topic!r}",
                             code="wrong-topic")
        enrollment_id, mode = self._enrollment_id(token, message)
        note(enrollment=enrollment_id)
        with self.store.transaction():  # the message's effects and the token's binding, all or nothing
            self._check_binding(token, enrollment_id, check_in=True)
            known = self.enrollment(enrollment_id) if kind != "Authenticate" else None
            facts = message if kind == "Authenticate" else {"ProductName": (known or {}).get("product"),
                                                            "OSVersion": (known or {}).get("os_version")}
            verdict = self._validate("checkin", kind, message, facts, mode, note, BadCheckIn)
            summary, reply = handler(token, enrollment_id, message, mode)
            summary += verdict
            if kind != "CheckOut":
                self.tokens.bind(bearer_of(authorization), enrollment_id, mode)
        return Exchange(enrollment_id, token.user, kind, summary, reply)

    def _enrollment_id(self, token: TokenInfo, message: dict) -> tuple[str, str]:
        """User Enrollment is known by EnrollmentID and must hide device identifiers; ADDE by UDID (PROTOCOL.md 3.4).

        A token from a sign-in after enrollment carries no mode yet: the enrollment it is used for tells.
        """
        mode = token.mode
        if mode is None:
            known = self.enrollment(str(message.get("UDID") or message.get("EnrollmentID") or ""))
            mode = known["mode"] if known else "BYOD"
        if mode == "ADDE":
            udid = message.get("UDID")
            if not isinstance(udid, str) or not udid:
                raise BadCheckIn("a Device Enrollment (ADDE) message must carry UDID", code="missing-udid")
            return udid, mode
        enrollment_id = message.get("EnrollmentID")
        if not isinstance(enrollment_id, str) or not enrollment_id:
            raise BadCheckIn("a User Enrollment message must carry EnrollmentID", code="missing-enrollment-id")
        present = [k for k in FORBIDDEN_BYOD_KEYS if k in message and k not in self._apple_allows(message, mode)]
        if present:
            raise BadCheckIn(f"a User Enrollment message must not carry {', '.join(present)}",
                             code="device-identifier-in-user-enrollment")
        return enrollment_id, mode

    def _apple_allows(self, message: dict, mode: str) -> frozenset[str]:
        """The keys Apple's schema allows in this check-in from the device of this enrollment: a few device
        identifiers are required even under User Enrollment (UDID in a Mac's CheckOut)."""
        known = self.enrollment(str(message.get("EnrollmentID") or ""))
        kind = message.get("MessageType")
        if known is None or not isinstance(kind, str):
            return frozenset()
        return validation.allowed("checkin", kind, validation.device_of(known["product"], known["os_version"], mode,
                                                                        message))

    def _check_binding(self, token: TokenInfo, enrollment_id: str, *, check_in: bool = False) -> None:
        """A token works for its own enrollment only, and for the enrollment's user only (PROTOCOL.md 4.4).

        An enrollment belongs to the account that created it until it checks out: no other account's Authenticate
        or TokenUpdate may take it over (ROBUSTNESS.md F5). The lab has no TLS client identity to tell devices
        apart, so the account is the binding; Apple's answer to a device the server does not recognize is
        ErrorUnrecognizedDevice.
        """
        if token.enrollment_id not in (None, enrollment_id):
            raise TokenBoundElsewhere("this access token belongs to another enrollment")
        known = self.enrollment(enrollment_id)
        if known and known["user"] != token.user and known["status"] != "checked-out":
            if check_in:
                raise UnrecognizedDevice(f"enrollment {enrollment_id} belongs to another account; {token.user} "
                                         "cannot take it over (it must check out first)")
            raise TokenBoundElsewhere(f"this access token belongs to {token.user}, the enrollment to {known['user']}",
                                      code="token-user-mismatch")

    def _validate(self, kind: str, name: str | None, message: dict, facts: dict, mode: str, note, error) -> str:
        """Hold ``message`` against Apple's schema (mocks/mdm/validation.py): refuse it (strict), or return a
        note for the summary (warn); the problems go to the event's detail either way."""
        if self.setup.schema_check == "off":
            return ""
        product, os_version = facts.get("ProductName"), facts.get("OSVersion")
        device = validation.device_of(product if isinstance(product, str) else None,
                                      os_version if isinstance(os_version, str) else None, mode, message)
        found = validation.problems(kind, name, message, device, self.checker)
        if not found:
            return ""
        assert device is not None  # problems are found only for a device whose platform is known
        note(detail={"schema_problems": found})
        said = validation.summary_of(found)
        if self.setup.schema_check == "strict" and validation.refusable(found):
            raise error(f"the {name or 'Idle'} {'message' if kind == 'checkin' else 'report'} departs from "
                        f"Apple's schema for {device.platform} {device.os_version}: {said}", code="schema-violation",
                        problems=found)
        return f"; {said}"

    def _authenticate(self, token: TokenInfo, enrollment_id: str, message: dict, mode: str) -> tuple[str, bytes]:
        now = self.clock()
        product, os_version = message.get("ProductName"), message.get("OSVersion")
        with self.store.transaction() as db:
            db.execute("INSERT INTO enrollments (enrollment_id, user, mode, topic, status, created, updated, last_seen,"
                       " product, os_version) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(enrollment_id) DO UPDATE SET"
                       " status = excluded.status, user = excluded.user, mode = excluded.mode,"
                       " updated = excluded.updated, last_seen = excluded.last_seen, push_token = NULL,"
                       " push_magic = NULL, enrollment_user_id = NULL, product = excluded.product,"
                       " os_version = excluded.os_version",
                       (enrollment_id, token.user, mode, message["Topic"], "authenticated", now, now, now,
                        product if isinstance(product, str) else None,
                        os_version if isinstance(os_version, str) else None))
        self.commands.cancel(enrollment_id)  # a new Authenticate starts a new enrollment
        return f"Authenticate {enrollment_id} for {token.user} ({mode})", b""

    def _token_update(self, token: TokenInfo, enrollment_id: str, message: dict, mode: str) -> tuple[str, bytes]:
        push_token, push_magic = message.get("Token"), message.get("PushMagic")
        if not isinstance(push_token, bytes) or not isinstance(push_magic, str):
            raise BadCheckIn("TokenUpdate needs Token (data) and PushMagic (string)", code="incomplete-token-update")
        user_channel = message.get("EnrollmentUserID") or message.get("UserID")
        if user_channel is not None and not isinstance(user_channel, str):
            raise BadCheckIn("EnrollmentUserID must be a string", code="bad-enrollment-user-id")
        with self.store.transaction() as db:
            updated = db.execute("UPDATE enrollments SET status = 'enrolled', push_token = ?, push_magic = ?,"
                                 " updated = ?, last_seen = ?, enrollment_user_id = coalesce(?, enrollment_user_id)"
                                 " WHERE enrollment_id = ? AND user = ? AND status != 'checked-out'",
                                 (push_token, push_magic, self.clock(), self.clock(), user_channel, enrollment_id,
                                  token.user)).rowcount
        if not updated:
            raise UnknownEnrollment(f"no Authenticate was received for enrollment {enrollment_id}")
        channel = f" (user channel {user_channel})" if user_channel else ""
        return f"TokenUpdate {enrollment_id}: enrolled{channel}", b""

    def _check_out(self, token: TokenInfo, enrollment_id: str, message: dict, mode: str) -> tuple[str, bytes]:
        with self.store.transaction() as db:
            db.execute("UPDATE enrollments SET status = 'checked-out', updated = ? WHERE enrollment_id = ?",
                       (self.clock(), enrollment_id))
        self.tokens.revoke(enrollment_id=enrollment_id)
        cancelled = self.commands.cancel(enrollment_id)
        return f"CheckOut {enrollment_id}" + (f"; {cancelled} pending command(s) cancelled" if cancelled else ""), b""

    def _get_token(self, token: TokenInfo, enrollment_id: str, message: dict, mode: str) -> tuple[str, bytes]:
        """GetToken (iOS 17, macOS 14): only com.apple.maid is a service this MDM knows; others are a 400."""
        service = message.get("TokenServiceType")
        if service != maid.SERVICE_TYPE or not self.setup.maid_tokens:
            raise BadCheckIn(f"TokenServiceType {service!r} is not a service this MDM issues tokens for "
                             f"(it knows {maid.SERVICE_TYPE})", code="unknown-token-service")
        known = self.enrollment(enrollment_id)
        if known is None or known["status"] != "enrolled":
            raise UnrecognizedDevice(f"enrollment {enrollment_id} is not enrolled with this MDM; no "
                                     f"{maid.SERVICE_TYPE} token for it")
        issuer = self.server_uuid or f"unregistered:{self.setup.host}"
        jwt = self.maid.token(issuer, self.clock())
        return (f"GetToken {maid.SERVICE_TYPE} for {token.user}: a token from {issuer}",
                plistlib.dumps({"TokenData": jwt.encode()}))

    # -- command channel (ServerURL) ---------------------------------------------------------------------------
    def poll(self, authorization: str | None, body: bytes, note=_quiet) -> Exchange:
        """A device's PUT to ServerURL: store its report, answer with the next command or an empty 200."""
        token = self.signin.ongoing_token(authorization)
        note(device=token.user, user=token.user)
        report = parse_report(body)
        enrollment_id, mode = self._enrollment_id(token, report)
        note(enrollment=enrollment_id)
        with self.store.transaction():  # the report, the binding and the next command, all or nothing
            self._check_binding(token, enrollment_id)
            known = self.enrollment(enrollment_id)
            if known is None or known["status"] == "checked-out":
                raise UnrecognizedDevice(f"enrollment {enrollment_id} is not known to this MDM (any more); the device "
                                         "should remove its enrollment (ErrorUnrecognizedDevice)")
            self.tokens.bind(bearer_of(authorization), enrollment_id, mode)
            with self.store.transaction() as db:
                db.execute("UPDATE enrollments SET last_seen = ? WHERE enrollment_id = ?",
                           (self.clock(), enrollment_id))
            status, answered = report["Status"], None
            if status != "Idle":
                answered = self.commands.request_type(enrollment_id, report["CommandUUID"])
            verdict = self._validate("response", answered, report, {"ProductName": known["product"],
                                                                    "OSVersion": known["os_version"]},
                                     mode, note, BadReport)
            summary = "Idle"
            if status != "Idle":
                recorded = self.commands.record(enrollment_id, report["CommandUUID"], status, body)
                if recorded is None:
                    raise BadReport(f"CommandUUID {report['CommandUUID']} is no command of this enrollment",
                                    code="unknown-command")
                answered = recorded["request_type"]
                note(message_type=answered)
                summary = f"{answered} {status}" + _chain_summary(report)
            summary += verdict
            if status == "NotNow":
                return Exchange(enrollment_id, token.user, answered, summary + "; nothing more on this connection")
            upcoming = self.commands.next(enrollment_id)
            if upcoming is None:
                return Exchange(enrollment_id, token.user, answered, summary + "; queue empty")
            return Exchange(enrollment_id, token.user, answered, summary + f"; sends {upcoming[1]}", upcoming[2])


def _chain_summary(report: dict) -> str:
    chain = report.get("ErrorChain")
    if not isinstance(chain, list) or not chain or not isinstance(chain[0], dict):
        return ""
    top = chain[0]
    description = top.get("USEnglishDescription") or top.get("LocalizedDescription")
    return f" ({top.get('ErrorDomain')} {top.get('ErrorCode')}: {description})"
