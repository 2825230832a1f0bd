"""The edge: what guards every request before a route sees it (Host, API key, limits, CORS, timeouts)."""
