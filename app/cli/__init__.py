"""The ``trillm`` command line: ``serve`` runs the server; every other command is its HTTP client."""
