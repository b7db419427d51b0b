"""A script run's stdout and stderr, kept bounded: the query, the answer and the reader live in
`host_bridge.script_logs` (a bridge serves its scripts' logs with them too), the files in
`host_bridge.rotating_log`; re-exported here for the core and its doors.
"""

from host_bridge.rotating_log import LogStream, RotatingLog
from host_bridge.script_logs import LogsQuery, OperationLogs, read_log

__all__ = ["LogStream", "LogsQuery", "OperationLogs", "RotatingLog", "read_log"]
