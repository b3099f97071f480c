"""Apple Business/School Manager: organizations, verified domains, MDM servers, the Device Assignment API.

Not built yet (issue: discovery in depth); the lab runs without it.
"""
