"""The wire: transports, framing, handshake and serialization.

This layer knows nothing about clusters, pids or remote references; the
engine above it decides what the frames mean.
"""
