"""The GPU host side of training-mcp: the bridge service, its sessions and durable spool, its wire
contract (`protocol`) and the server's client of it (`client`). Training loops push their metrics
with the light client, `training_mcp`, which the bridge's sessions use too."""
