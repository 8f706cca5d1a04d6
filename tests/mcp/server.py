"""MCP test server for tests/test_mcp.c, written with the official SDK (FastMCP).

    server.py                      stdio transport
    server.py --http PORT_FILE     streamable HTTP on 127.0.0.1, a free port written to PORT_FILE
    server.py --http PORT_FILE --json   the same, answering with JSON bodies instead of SSE

Each tool exercises one path of agentd's MCP client: a plain call, structured output, a tool
error, a call that hangs, a server that dies mid-call and an oversized answer.
"""

import asyncio
import os
import socket
import sys

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("agentd-test")


@mcp.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@mcp.tool()
def echo(text: str) -> str:
    """Returns its text unchanged."""
    return text


@mcp.tool()
def fail(message: str = "it failed on purpose") -> str:
    """Always raises an error (the result has isError set)."""
    raise RuntimeError(message)


@mcp.tool()
async def sleep(seconds: float) -> str:
    """Sleeps, then answers: the hang and timeout test."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@mcp.tool()
def crash(status: int = 3) -> str:
    """Kills the server in the middle of the call."""
    sys.stderr.write("crash: exiting on purpose\n")
    sys.stderr.flush()
    os._exit(status)


@mcp.tool()
def big(n: int) -> str:
    """Answers n bytes of text: 'é' (two bytes) repeated, so a cut can land inside one."""
    return "\u00e9" * (n // 2)


@mcp.tool()
def pid() -> int:
    """The server's process id (tells a restarted server from the old one)."""
    return os.getpid()


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--http":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        mcp.settings.host = "127.0.0.1"
        mcp.settings.port = port
        mcp.settings.log_level = "WARNING"
        mcp.settings.json_response = "--json" in sys.argv[3:]
        with open(sys.argv[2] + ".tmp", "w") as f:
            f.write(str(port))
        os.rename(sys.argv[2] + ".tmp", sys.argv[2])
        mcp.run(transport="streamable-http")
    else:
        mcp.run(transport="stdio")


if __name__ == "__main__":
    main()
