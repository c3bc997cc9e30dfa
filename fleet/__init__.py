"""fleet: simulate heterogeneous AIoT fleets that learn together, in virtual time.

``fleet.simulate`` (the Python API, ``fleet.api``) is imported when first used, so ``import fleet`` and
``python -m fleet.run --help`` stay light; the programs are ``python -m fleet.run|sweep|agent|keys``.
"""

__all__ = ["simulate"]


def __getattr__(name: str):
    if name == "simulate":
        from fleet.api import simulate

        return simulate
    raise AttributeError(f"module 'fleet' has no attribute {name!r}")
