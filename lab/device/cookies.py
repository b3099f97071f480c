"""The sign-in browser's cookies, as RFC 6265 stores and sends them (the parts a sign-in uses).

Host-only cookies and Domain cookies (a Domain that does not cover the answering host is refused, and noted in
``refused`` as a browser's web inspector shows it), the default
path and path matching, Max-Age before Expires, deletion by a past expiry, Secure cookies only over https.
The web session an Enrollment SSO app keeps is this jar, persisted as name, value, domain (a leading dot for a
Domain cookie, as browsers and requests write it), path and secure.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass
class Cookie:
    name: str
    value: str
    domain: str  # without a leading dot
    path: str = "/"
    secure: bool = False
    host_only: bool = True
    expires: float | None = None  # None: a session cookie

    @property
    def stored_domain(self) -> str:
        return self.domain if self.host_only else f".{self.domain}"


def _domain_match(host: str, domain: str) -> bool:
    return host == domain or host.endswith(f".{domain}")


def _path_match(path: str, cookie_path: str) -> bool:
    return path == cookie_path or (path.startswith(cookie_path)
                                   and (cookie_path.endswith("/") or path[len(cookie_path)] == "/"))


def _default_path(path: str) -> str:
    if not path.startswith("/") or path.count("/") == 1:
        return "/"
    return path[:path.rindex("/")]


class CookieJar:
    def __init__(self, clock=time.time):
        self.clock = clock
        self._cookies: dict[tuple[str, str, str], Cookie] = {}
        self.refused: list[str] = []  # the Set-Cookie fields not stored, and why

    def set(self, name: str, value: str, domain: str, path: str = "/", secure: bool = False,
            expires: float | None = None) -> None:
        """Put back a stored cookie; ``domain`` with a leading dot is a Domain cookie, without it host-only."""
        host_only = not domain.startswith(".")
        cookie = Cookie(name, value, domain.lstrip(".").lower(), path or "/", bool(secure), host_only, expires)
        self._cookies[(cookie.domain, cookie.path, cookie.name)] = cookie

    def __iter__(self):
        now = self.clock()
        return iter([c for c in self._cookies.values() if c.expires is None or c.expires > now])

    def __len__(self) -> int:
        return len(list(iter(self)))

    def header(self, host: str, path: str, secure: bool = True) -> str | None:
        """The Cookie header for a request to ``host`` and ``path``, longest paths first; None if none apply."""
        host = host.lower()
        chosen = [c for c in self if (c.domain == host if c.host_only else _domain_match(host, c.domain))
                  and _path_match(path or "/", c.path) and (secure or not c.secure)]
        chosen.sort(key=lambda c: -len(c.path))
        return "; ".join(f"{c.name}={c.value}" for c in chosen) or None

    def receive(self, host: str, path: str, set_cookies: list[str]) -> None:
        """Store (or delete) what each Set-Cookie field of an answer from ``host`` for ``path`` says."""
        for field in set_cookies:
            self._receive_one(host.lower(), path or "/", field)

    def _receive_one(self, host: str, request_path: str, field: str) -> None:
        pair, *attributes = field.split(";")
        name, sep, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            return  # RFC 6265 5.2: ignore a cookie without a name=value pair
        domain, path, secure, expires, max_age = None, None, False, None, None
        for attribute in attributes:
            key, _, raw = attribute.partition("=")
            key, raw = key.strip().lower(), raw.strip()
            if key == "domain" and raw:
                domain = raw.lstrip(".").lower()
            elif key == "path":
                path = raw if raw.startswith("/") else None
            elif key == "secure":
                secure = True
            elif key == "max-age":
                try:
                    max_age = int(raw)
                except ValueError:
                    continue
            elif key == "expires":
                try:
                    expires = parsedate_to_datetime(raw).timestamp()
                except (TypeError, ValueError, IndexError, OverflowError):
                    continue
        if domain is not None and not _domain_match(host, domain):  # a host cannot set cookies for another domain
            self.refused.append(f"{name} from {host} with Domain={domain}")
            return
        if max_age is not None:
            expires = self.clock() + max_age if max_age > 0 else 0.0
        cookie = Cookie(name, value, domain or host, path or _default_path(request_path), secure,
                        host_only=domain is None, expires=expires)
        slot = (cookie.domain, cookie.path, cookie.name)
        if expires is not None and expires <= self.clock():
            self._cookies.pop(slot, None)
        else:
            self._cookies[slot] = cookie
