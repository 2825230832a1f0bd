"""HTTP tests: the real server on port 0 with the fake backend, and the command line against it."""
