"""Who may use the console: the lab's admin gate (lab/admin_gate.py) with the console's public paths and form.

The CA downloads stay public: a phone must fetch the CA before it can trust anything, and a CA certificate is no
secret; so do the page's static files.
"""
from __future__ import annotations

from lab.admin_gate import COOKIE, CSRF_COOKIE, CSRF_HEADER, AdminGate

__all__ = ["COOKIE", "CSRF_COOKIE", "CSRF_HEADER", "gate"]

PUBLIC_PATHS = frozenset({"/ca.pem", "/ca.mobileconfig"})


def gate(lab) -> AdminGate:
    return AdminGate(lambda: lab.admin_token, public_paths=PUBLIC_PATHS, login_template="token.html",
                     title="mdmlab console")
