"""The ``breastpath`` command line: thin shells over the library."""
