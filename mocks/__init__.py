"""The emulated services. Each mock is a Flask app with its own state; they share nothing but the network.

``FAULTS`` is every mock's fault records (each mock registers its own in its ``faults.py``), in a stable order;
the launcher joins it once with the DNS and TLS faults. It is computed on first use, so importing one mock does
not import the others.
"""


def __getattr__(name: str):
    if name == "FAULTS":
        from mocks.abm.faults import FAULTS as abm
        from mocks.apple_id.faults import FAULTS as apple_id
        from mocks.mdm.faults import FAULTS as mdm
        from mocks.org_domain.faults import FAULTS as org_domain

        return [*org_domain, *abm, *apple_id, *mdm]
    raise AttributeError(f"module 'mocks' has no attribute {name!r}")
