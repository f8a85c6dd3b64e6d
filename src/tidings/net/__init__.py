"""Network adapters the core reaches other servers through (federation)."""
