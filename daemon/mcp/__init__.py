"""`opentermd mcp`: the API's schema operations as MCP tools (stdio or streamable HTTP).

Needs the optional `mcp` extra; nothing here is imported on the `opentermd run` start path.
"""
