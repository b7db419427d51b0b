"""training-mcp's server: the MCP server, the REST mirror beside it, and the service they share."""

__version__ = "0.1.0"

__all__ = ["__version__"]
