from tests.mcp_server.conftest import config, service

__all__ = ["config", "service"]
