"""The control plane: health, the event timeline, state snapshots and the CA, apart from the emulated hosts."""
from lab.console.app import create_app

__all__ = ["create_app"]
