"""Adapters to network services: DNS (SRV records of peers) and other domains' servers
(signed federation requests)."""
