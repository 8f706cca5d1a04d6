"""MCP test server for tests/test_mcp.c, written with the official SDK (FastMCP).

    server.py                      stdio transport
    server.py --http PORT_FILE     streamable HTTP on 127.0.0.1, a free port written to PORT_FILE
    server.py --http PORT_FILE --json   the same, answering with JSON bodies instead of SSE

Each tool exercises one path of agentd's MCP client: a plain call, structured output, a tool
error, a call that hangs, a server that dies mid-call and an oversized answer; read_file,
connect and spawn probe what a sandboxed server can reach and leave behind.
"""

import asyncio
import os
import socket
import subprocess
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


@mcp.tool()
def read_file(path: str) -> str:
    """Reads a file: what a sandboxed server may see ("error: ..." when it cannot)."""
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode("utf-8", "replace")
    except OSError as e:
        return f"error: {e.strerror}"


@mcp.tool()
def connect(host: str, port: int) -> str:
    """Opens a TCP connection: whether a sandboxed server has network ("ok" or "error: ...")."""
    try:
        with socket.create_connection((host, port), timeout=5):
            return "ok"
    except OSError as e:
        return f"error: {e.strerror or e}"


@mcp.tool()
def spawn(argv: list[str]) -> int:
    """Starts a background process that outlives the call (a grandchild of the client); its pid."""
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ).pid


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
