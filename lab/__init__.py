"""mdmlab: a lab for Apple's account-driven enrollment."""
__version__ = "0.1.0"
