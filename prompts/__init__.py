"""MCP prompt templates: one Markdown file per prompt, loaded and registered by `mcp_server`."""
