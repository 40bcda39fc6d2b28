"""Links: one authenticated, framed connection to a peer and the threads that
serve it (:class:`~.connection.Connection`). Knows frames, not the cluster."""
