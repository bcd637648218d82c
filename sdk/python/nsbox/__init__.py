"""nsbox: the Python SDK of the nsbox sandbox daemon (standard library only).

    from nsbox import Client
    with Client().sandbox() as sb:
        with sb.session() as s:
            s.exec("cd /tmp && export GREETING=hi")
            print(s.exec("echo $GREETING from $PWD").text)

``AsyncClient`` (in nsbox.aio) has the same surface on asyncio.
"""
from .aio import AsyncClient
from .client import (Client, CodeContext, ExecStream, Feed, Files, FileWatch, Fork, LogStream, Ports, Process, Processes, Sandbox,
                     Session, Snapshots, Terminal)
from .errors import (ConditionNotMet, Conflict, DaemonUnreachable, Forbidden, InsufficientStorage, Internal, InvalidArgument,
                     NotFound, NsboxError, PayloadTooLarge, PreconditionFailed, RangeNotSatisfiable, Unauthorized, Unavailable)
from .models import (CodeContextInfo, Event, ExecEvent, ExecResult, ExposedPort, FileEvent, FileInfo, ImageInfo, ImageProgress,
                     ProcessEvent, ProcessInfo, ProcessLogs, PruneResult, RunCodeResult, SandboxInfo, SandboxStats, SessionInfo,
                     SessionToken, SnapshotInfo, TokenInfo, WaitResult)

__all__ = ["Client", "AsyncClient", "Sandbox", "Session", "Files", "FileWatch", "Processes", "Process", "LogStream", "Ports",
           "CodeContext", "Terminal", "ExecStream", "NsboxError", "InvalidArgument", "Unauthorized", "Forbidden", "NotFound",
           "Conflict", "PreconditionFailed", "PayloadTooLarge", "RangeNotSatisfiable", "Internal", "Unavailable",
           "InsufficientStorage", "DaemonUnreachable", "ConditionNotMet", "SandboxInfo", "SessionInfo", "ExecResult", "ExecEvent",
           "FileInfo", "FileEvent", "ExposedPort", "ProcessInfo", "ProcessEvent", "ProcessLogs", "WaitResult", "CodeContextInfo",
           "RunCodeResult", "TokenInfo", "Snapshots", "Feed", "Fork", "Event", "ImageInfo", "ImageProgress", "PruneResult",
           "SandboxStats", "SessionToken", "SnapshotInfo"]
