"""Brokers: live fan-out between the nodes of a deployment (``core.ports.Broker``)."""
