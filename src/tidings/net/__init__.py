"""Adapters to network services other than our own peers and stores (DNS)."""
