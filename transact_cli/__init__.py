"""The ``transact`` command line: one verb group per stage."""
