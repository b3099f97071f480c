"""The MDM's two device channels after enrollment (PROTOCOL.md 3.3-4): check-in messages on CheckInURL, routed by
MessageType, and the command poll on ServerURL (reports in, the next command out). Every body goes through one
plist parser that refuses what it cannot bound (lab.plists) with a 400 that says why."""
from __future__ import annotations

from lab import plists
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


class Channel:
    def __init__(self, setup, store, tokens, signin, commands: CommandQueue, clock):
        self.setup, self.store, self.tokens, self.signin = setup, store, tokens, signin
        self.commands, self.clock = commands, clock

    def enrollment(self, enrollment_id: str) -> dict | None:
        row = self.store.one("SELECT enrollment_id, user, mode, topic, status, push_magic, created, updated,"
                             " enrollment_user_id, last_seen FROM enrollments WHERE enrollment_id = ?",
                             (enrollment_id,))
        return dict(row) if row else None

    # -- check-in (3.3, 4) -------------------------------------------------------------------------------------
    def check_in(self, authorization: str | None, body: bytes) -> tuple[str, str]:
        """Apply one check-in message; returns (enrollment id, summary). The token is checked first."""
        try:
            message, bad_body = parse_checkin_body(body), None
        except BadCheckIn as exc:
            message, bad_body = {}, exc
        # The device sends CheckOut once and cannot re-authenticate: accept its enrollment's expired token
        # (PROTOCOL.md 4.6); the binding to the same EnrollmentID/UDID is still checked below.
        token = self.signin.ongoing_token(authorization, allow_expired=message.get("MessageType") == "CheckOut")
        if bad_body is not None:
            raise bad_body
        kind = message["MessageType"]
        handler = {"Authenticate": self._authenticate, "TokenUpdate": self._token_update,
                   "CheckOut": self._check_out}.get(kind)
        if handler is None:
            raise BadCheckIn(f"MessageType {kind!r} is not supported", code="unknown-message-type")
        if message.get("Topic") != self.setup.topic:
            raise BadCheckIn(f"Topic {message.get('Topic')!r} is not this MDM's topic {self.setup.topic!r}",
                             code="wrong-topic")
        enrollment_id, mode = self._enrollment_id(token, message)
        with self.store.transaction():  # the message's effects and the token's binding, all or nothing
            self._check_binding(token, enrollment_id, fresh=kind == "Authenticate")
            summary = handler(token, enrollment_id, message, mode)
            if kind != "CheckOut":
                self.tokens.bind(bearer_of(authorization), enrollment_id, mode)
        return enrollment_id, summary

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
        present = [k for k in FORBIDDEN_BYOD_KEYS if k in message]
        if present:
            raise BadCheckIn(f"a User Enrollment message must not carry {', '.join(present)}",
                             code="device-identifier-in-user-enrollment")
        return enrollment_id, mode

    def _check_binding(self, token: TokenInfo, enrollment_id: str, *, fresh: bool = False) -> None:
        """A token works for its own enrollment only, and for the enrollment's user only (PROTOCOL.md 4.4)."""
        if token.enrollment_id not in (None, enrollment_id):
            raise TokenBoundElsewhere("this access token belongs to another enrollment")
        known = self.enrollment(enrollment_id)
        if known and known["user"] != token.user and not (fresh or known["status"] == "checked-out"):
            raise TokenBoundElsewhere(f"this access token belongs to {token.user}, the enrollment to {known['user']}",
                                      code="token-user-mismatch")

    def _authenticate(self, token: TokenInfo, enrollment_id: str, message: dict, mode: str) -> str:
        now = self.clock()
        with self.store.transaction() as db:
            db.execute("INSERT INTO enrollments (enrollment_id, user, mode, topic, status, created, updated, last_seen)"
                       " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(enrollment_id) DO UPDATE SET status = excluded.status,"
                       " user = excluded.user, mode = excluded.mode, updated = excluded.updated,"
                       " last_seen = excluded.last_seen, push_token = NULL, push_magic = NULL,"
                       " enrollment_user_id = NULL",
                       (enrollment_id, token.user, mode, message["Topic"], "authenticated", now, now, now))
        self.commands.cancel(enrollment_id)  # a new Authenticate starts a new enrollment
        return f"Authenticate {enrollment_id} for {token.user} ({mode})"

    def _token_update(self, token: TokenInfo, enrollment_id: str, message: dict, mode: str) -> str:
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
        return f"TokenUpdate {enrollment_id}: enrolled" + (f" (user channel {user_channel})" if user_channel else "")

    def _check_out(self, token: TokenInfo, enrollment_id: str, message: dict, mode: str) -> str:
        with self.store.transaction() as db:
            db.execute("UPDATE enrollments SET status = 'checked-out', updated = ? WHERE enrollment_id = ?",
                       (self.clock(), enrollment_id))
        self.tokens.revoke(enrollment_id=enrollment_id)
        cancelled = self.commands.cancel(enrollment_id)
        return f"CheckOut {enrollment_id}" + (f"; {cancelled} pending command(s) cancelled" if cancelled else "")

    # -- command channel (ServerURL) ---------------------------------------------------------------------------
    def poll(self, authorization: str | None, body: bytes) -> tuple[str, bytes, str]:
        """A device's PUT to ServerURL: store its report, answer with the next command or an empty 200."""
        token = self.signin.ongoing_token(authorization)
        report = parse_report(body)
        enrollment_id, mode = self._enrollment_id(token, report)
        with self.store.transaction():  # the report, the binding and the next command, all or nothing
            self._check_binding(token, enrollment_id)
            known = self.enrollment(enrollment_id)
            if known is None or known["status"] == "checked-out":
                raise UnrecognizedDevice(f"enrollment {enrollment_id} is not known to this MDM (any more); the device "
                                         "should remove its enrollment (ErrorUnrecognizedDevice)")
            self.tokens.bind(bearer_of(authorization), enrollment_id, mode)
            with self.store.transaction() as db:
                db.execute("UPDATE enrollments SET last_seen = ? WHERE enrollment_id = ?", (self.clock(), enrollment_id))
            status = report["Status"]
            summary = "Idle"
            if status != "Idle":
                recorded = self.commands.record(enrollment_id, report["CommandUUID"], status, body)
                if recorded is None:
                    raise BadReport(f"CommandUUID {report['CommandUUID']} is no command of this enrollment",
                                    code="unknown-command")
                summary = f"{recorded['request_type']} {status}" + _chain_summary(report)
            if status == "NotNow":
                return enrollment_id, b"", summary + "; nothing more on this connection"
            upcoming = self.commands.next(enrollment_id)
            if upcoming is None:
                return enrollment_id, b"", summary + "; queue empty"
            return enrollment_id, upcoming[2], summary + f"; sends {upcoming[1]}"


def _chain_summary(report: dict) -> str:
    chain = report.get("ErrorChain")
    if not isinstance(chain, list) or not chain or not isinstance(chain[0], dict):
        return ""
    top = chain[0]
    return f" ({top.get('ErrorDomain')} {top.get('ErrorCode')}: {top.get('USEnglishDescription') or top.get('LocalizedDescription')})"
