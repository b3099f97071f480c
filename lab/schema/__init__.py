"""Apple's device-management schema as the lab's own facts (plumbing): which keys each check-in message, command,
command report, payload and error body carries, with their types, presence, OS versions and the rules of each
enrollment type and channel. The device builds its messages from ``keys_for``; the MDM mock checks what it
receives with ``check``. The data is derived by scripts/derive-schema (README.md, "Apple's schema facts")."""
from lab.schema.facts import CHANNELS, ENROLLMENTS, KINDS, PLATFORMS, Context, UnknownName, names, newest_known, version
from lab.schema.validate import CODES, Key, Problem, check, introduced, keys_for, supported

__all__ = ["CHANNELS", "CODES", "ENROLLMENTS", "KINDS", "PLATFORMS", "Context", "Key", "Problem", "UnknownName",
           "check", "introduced", "keys_for", "names", "newest_known", "supported",
           "version"]
