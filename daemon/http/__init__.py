"""The HTTP edge: endpoint registry, OpenAPI, auth, CORS and error rendering."""
