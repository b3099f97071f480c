"""Apple Business/School Manager: verified domains, Managed Apple Accounts, MDM servers, default device
assignment, the Device Assignment API for the discovery URL and the device-facing fallback (PROTOCOL.md 1.6-1.8).
"""
from mocks.abm.app import create_apps
from mocks.abm.directory import ABMDirectory, DirectorySetup, OtherOrganization
from mocks.abm.faults import FAULTS
from mocks.abm.state import ABMSetup, ABMState

__all__ = ["create_apps", "ABMDirectory", "ABMSetup", "ABMState", "DirectorySetup", "FAULTS", "OtherOrganization"]
