"""The MDM's credentials store: grants, access and refresh tokens, authorization codes, sign-in requests and web
sessions (PROTOCOL.md 2.3-2.5 and 4), all hashed at rest.

A *grant* is one successful sign-in of one user. Its access tokens (and, with OAuth 2, its refresh tokens) share
the grant's fate: revoking the grant revokes them all, and binding the grant to an enrollment at the first
check-in binds every token refreshed from it. A new sign-in makes a new grant.
"""
from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from lab.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (
    grant_id TEXT PRIMARY KEY, user TEXT NOT NULL, method TEXT NOT NULL, created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0, enrollment_id TEXT, mode TEXT
);
CREATE TABLE IF NOT EXISTS access_tokens (
    token_hash TEXT PRIMARY KEY, grant_id TEXT NOT NULL REFERENCES grants(grant_id), created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY, grant_id TEXT NOT NULL REFERENCES grants(grant_id), created REAL NOT NULL,
    expires REAL NOT NULL, used REAL
);
CREATE TABLE IF NOT EXISTS auth_requests (
    request_id TEXT PRIMARY KEY, kind TEXT NOT NULL, login_hint TEXT, client_id TEXT, redirect_uri TEXT,
    scope TEXT, state TEXT, code_challenge TEXT, code_challenge_method TEXT, created REAL NOT NULL,
    expires REAL NOT NULL, done REAL
);
CREATE TABLE IF NOT EXISTS codes (
    code_hash TEXT PRIMARY KEY, request_id TEXT NOT NULL REFERENCES auth_requests(request_id),
    user TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL, used REAL, grant_id TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    session_hash TEXT PRIMARY KEY, user TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS used_assertions (
    assertion_id TEXT PRIMARY KEY, used REAL NOT NULL
)
"""

REQUEST_TTL = 600  # a sign-in page left open longer than this must be reloaded
SESSION_TTL = 8 * 3600  # the web session an Enrollment SSO app keeps (single sign-on on renewal)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer_of(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None when the header is missing or not Bearer."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@dataclass(frozen=True)
class TokenInfo:
    user: str
    enrollment_id: str | None
    expires: float
    mode: str | None = None
    grant_id: str | None = None
    revoked: bool = False
    method: str = "simple"

    def expired(self, now: float) -> bool:
        return self.expires <= now


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str | None
    grant_id: str


@dataclass(frozen=True)
class AuthRequest:
    request_id: str
    kind: str  # "simple" or "oauth2"
    login_hint: str
    client_id: str | None
    redirect_uri: str | None
    scope: str | None
    state: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    expires: float
    done: float | None


class Tokens:
    def __init__(self, store: Store, clock):
        self.store, self.clock = store, clock

    # -- grants and tokens -----------------------------------------------------------------------------------
    def issue(self, user: str, method: str, access_ttl: int, refresh_ttl: int | None) -> IssuedTokens:
        """A new grant for ``user`` with one access token and, when ``refresh_ttl`` is set, one refresh token."""
        grant_id, now = uuid.uuid4().hex, self.clock()
        with self.store.transaction() as db:
            db.execute("INSERT INTO grants (grant_id, user, method, created) VALUES (?,?,?,?)",
                       (grant_id, user, method, now))
            return self._mint(grant_id, access_ttl, refresh_ttl)

    def _mint(self, grant_id: str, access_ttl: int, refresh_ttl: int | None) -> IssuedTokens:
        access, refresh, now = secrets.token_urlsafe(32), None, self.clock()
        with self.store.transaction() as db:
            db.execute("INSERT INTO access_tokens VALUES (?,?,?,?)", (digest(access), grant_id, now, now + access_ttl))
            if refresh_ttl:
                refresh = secrets.token_urlsafe(32)
                db.execute("INSERT INTO refresh_tokens (token_hash, grant_id, created, expires) VALUES (?,?,?,?)",
                           (digest(refresh), grant_id, now, now + refresh_ttl))
        return IssuedTokens(access, access_ttl, refresh, grant_id)

    def lookup(self, token: str) -> TokenInfo | None:
        row = self.store.one(
            "SELECT g.user, g.enrollment_id, g.mode, g.grant_id, g.revoked, g.method, a.expires FROM access_tokens a"
            " JOIN grants g USING (grant_id) WHERE a.token_hash = ?", (digest(token),))
        if row is None:
            return None
        return TokenInfo(row["user"], row["enrollment_id"], row["expires"], row["mode"], row["grant_id"],
                         bool(row["revoked"]), row["method"])

    def refresh(self, refresh_token: str, access_ttl: int, refresh_ttl: int | None) -> tuple[str, IssuedTokens | None]:
        """Rotate a refresh token: ("ok", new tokens) or (reason, None).

        A refresh token works once; presenting a used one again revokes the whole grant (reuse detection, as the
        OAuth 2 security best current practice asks: the token was probably stolen).
        """
        now = self.clock()
        row = self.store.one("SELECT r.grant_id, r.expires, r.used, g.revoked FROM refresh_tokens r JOIN grants g"
                             " USING (grant_id) WHERE r.token_hash = ?", (digest(refresh_token),))
        if row is None:
            return "unknown", None
        if row["revoked"]:
            return "revoked", None
        if row["used"] is not None:
            self.revoke(grant_id=row["grant_id"])
            return "reused", None
        if row["expires"] <= now:
            return "expired", None
        with self.store.transaction() as db:
            db.execute("UPDATE refresh_tokens SET used = ? WHERE token_hash = ?", (now, digest(refresh_token)))
        return "ok", self._mint(row["grant_id"], access_ttl, refresh_ttl)

    def set_mode(self, token: str, mode: str) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE grants SET mode = ? WHERE grant_id = (SELECT grant_id FROM access_tokens"
                       " WHERE token_hash = ?)", (mode, digest(token)))

    def bind(self, token: str, enrollment_id: str, mode: str) -> None:
        """Bind the token's grant to its enrollment at the first check-in; a bound grant stays bound."""
        with self.store.transaction() as db:
            db.execute("UPDATE grants SET enrollment_id = ?, mode = coalesce(mode, ?) WHERE enrollment_id IS NULL"
                       " AND grant_id = (SELECT grant_id FROM access_tokens WHERE token_hash = ?)",
                       (enrollment_id, mode, digest(token)))

    def _grants(self, *, grant_id=None, enrollment_id=None, user=None) -> tuple[str, list]:
        clauses, params = [], []
        for column, value in (("grant_id", grant_id), ("enrollment_id", enrollment_id), ("user", user)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def revoke(self, *, grant_id=None, enrollment_id=None, user=None) -> int:
        """Revoke grants (their access and refresh tokens); with no filter, every grant."""
        where, params = self._grants(grant_id=grant_id, enrollment_id=enrollment_id, user=user)
        with self.store.transaction() as db:
            return db.execute(f"UPDATE grants SET revoked = 1{where}{' AND' if where else ' WHERE'} revoked = 0",
                              params).rowcount

    def expire(self, *, grant_id=None, enrollment_id=None, user=None) -> int:
        """Expire the access tokens of some grants now (refresh tokens keep working)."""
        where, params = self._grants(grant_id=grant_id, enrollment_id=enrollment_id, user=user)
        now = self.clock()
        with self.store.transaction() as db:
            return db.execute(f"UPDATE access_tokens SET expires = ? WHERE expires > ? AND grant_id IN"
                              f" (SELECT grant_id FROM grants{where})", [now, now, *params]).rowcount

    # -- sign-in requests, codes, sessions -------------------------------------------------------------------
    def new_request(self, kind: str, login_hint: str, **oauth) -> str:
        request_id, now = secrets.token_urlsafe(18), self.clock()
        with self.store.transaction() as db:
            db.execute("INSERT INTO auth_requests (request_id, kind, login_hint, client_id, redirect_uri, scope, state,"
                       " code_challenge, code_challenge_method, created, expires) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (request_id, kind, login_hint, oauth.get("client_id"), oauth.get("redirect_uri"),
                        oauth.get("scope"), oauth.get("state"), oauth.get("code_challenge"),
                        oauth.get("code_challenge_method"), now, now + REQUEST_TTL))
        return request_id

    def request(self, request_id: str) -> AuthRequest | None:
        row = self.store.one("SELECT * FROM auth_requests WHERE request_id = ?", (request_id,))
        if row is None:
            return None
        return AuthRequest(row["request_id"], row["kind"], row["login_hint"] or "", row["client_id"],
                           row["redirect_uri"], row["scope"], row["state"], row["code_challenge"],
                           row["code_challenge_method"], row["expires"], row["done"])

    def finish_request(self, request_id: str) -> bool:
        """Mark a sign-in request done; False if it already was (a replayed form or callback)."""
        with self.store.transaction() as db:
            return db.execute("UPDATE auth_requests SET done = ? WHERE request_id = ? AND done IS NULL",
                              (self.clock(), request_id)).rowcount == 1

    def new_code(self, request_id: str, user: str, ttl: int) -> str:
        code, now = secrets.token_urlsafe(24), self.clock()
        with self.store.transaction() as db:
            db.execute("INSERT INTO codes (code_hash, request_id, user, created, expires) VALUES (?,?,?,?,?)",
                       (digest(code), request_id, user, now, now + ttl))
        return code

    def redeem_code(self, code: str) -> tuple[str, dict | None]:
        """Use an authorization code once: ("ok", row with its request) or (reason, None).

        A code presented again revokes the grant it issued (RFC 6749 4.1.2: the code has probably leaked).
        """
        now = self.clock()
        with self.store.transaction() as db:
            row = db.execute("SELECT c.user, c.expires, c.used, c.grant_id, r.* FROM codes c JOIN auth_requests r"
                             " USING (request_id) WHERE c.code_hash = ?", (digest(code),)).fetchone()
            if row is None:
                return "unknown", None
            if row["used"] is not None:
                if row["grant_id"] and self.revoke(grant_id=row["grant_id"]):
                    return "used; the tokens it was exchanged for are revoked", None
                return "used", None
            db.execute("UPDATE codes SET used = ? WHERE code_hash = ?", (now, digest(code)))
        if row["expires"] <= now:
            return "expired", None
        return "ok", dict(row)

    def link_code(self, code: str, grant_id: str) -> None:
        """Remember which grant a code was exchanged for, so that a replay can revoke it."""
        with self.store.transaction() as db:
            db.execute("UPDATE codes SET grant_id = ? WHERE code_hash = ?", (grant_id, digest(code)))

    def new_session(self, user: str) -> str:
        session, now = secrets.token_urlsafe(24), self.clock()
        with self.store.transaction() as db:
            db.execute("INSERT INTO sessions VALUES (?,?,?,?)", (digest(session), user, now, now + SESSION_TTL))
        return session

    def session_user(self, session: str | None) -> str | None:
        if not session:
            return None
        row = self.store.one("SELECT user, expires FROM sessions WHERE session_hash = ?", (digest(session),))
        return row["user"] if row and row["expires"] > self.clock() else None

    def end_sessions(self, user: str | None = None) -> None:
        with self.store.transaction() as db:
            if user is None:
                db.execute("DELETE FROM sessions")
            else:
                db.execute("DELETE FROM sessions WHERE user = ?", (user,))

    def use_assertion(self, assertion_id: str) -> bool:
        """Record a federated assertion as used; False when it was used before (a replay)."""
        with self.store.transaction() as db:
            return db.execute("INSERT OR IGNORE INTO used_assertions VALUES (?,?)",
                              (assertion_id, self.clock())).rowcount == 1

    # -- views -------------------------------------------------------------------------------------------------
    def snapshot(self) -> list[dict]:
        return [dict(r) for r in self.store.query(
            "SELECT substr(a.token_hash, 1, 12) AS token_hash_prefix, g.user, a.created, a.expires, g.revoked,"
            " g.enrollment_id, g.method, substr(g.grant_id, 1, 8) AS grant,"
            " (SELECT count(*) FROM refresh_tokens r WHERE r.grant_id = g.grant_id AND r.used IS NULL) AS refresh"
            " FROM access_tokens a JOIN grants g USING (grant_id) ORDER BY a.created")]
