"""Engine tests on the fake backend: scheduling, cancellation and residency, with no sockets."""
