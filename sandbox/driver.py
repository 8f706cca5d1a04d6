# driver.py - the code-interpreter session's Python side (sandbox/session.c is the host side).
#
# Runs inside the sandbox as `python3 -I -u -c <this file>`. Reads cells from fd 3 and answers
# on fd 4; the cell's own output goes to fds 1 and 2 as it is produced (the host streams it).
#
# Frames, both ways: a 4-byte big-endian length, then that many bytes.
#   host -> driver:  b"X" + code (UTF-8)          run a cell
#   driver -> host:  b"H"                         ready (sent once at start)
#                    b"R" + fields                a cell finished
# Fields: one byte tag, a 4-byte big-endian length, the bytes. Tags: v (repr of the last
# expression, when not None), n (exception type name), m (exception message), t (traceback).
#
# Like a notebook, a cell's last statement is evaluated as an expression when it is one, and
# its value is returned (and bound to `_`). KeyboardInterrupt (the host's SIGINT on a timeout)
# ends the cell, not the session: SIGINT is only live while a cell runs.
import ast
import builtins
import os
import signal
import struct
import sys
import traceback

CMD, REP = os.dup(3), os.dup(4)
os.close(3)
os.close(4)
MAX_REPR = 64 * 1024
signal.signal(signal.SIGINT, signal.SIG_IGN)


def read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(CMD, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def send(kind, fields=()):
    body = kind
    for tag, text in fields:
        data = text.encode("utf-8", "replace")
        body += tag + struct.pack(">I", len(data)) + data
    frame = struct.pack(">I", len(body)) + body
    while frame:
        frame = frame[os.write(REP, frame):]


def run_cell(code, ns):
    fields = []
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        tree = ast.parse(code, "<cell>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<cell>", "exec"), ns)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval"), ns)
            if value is not None:
                ns["_"] = value
                text = repr(value)
                if len(text) > MAX_REPR:
                    text = text[:MAX_REPR] + "... [truncated]"
                fields.append((b"v", text))
    except BaseException as e:  # the cell's failure, SystemExit and KeyboardInterrupt included
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
            tb = tb.tb_next  # hide the driver's frames and the parser's (a SyntaxError has none)
        fields.append((b"n", type(e).__name__))
        fields.append((b"m", str(e)))
        fields.append((b"t", "".join(traceback.format_exception(type(e), e, tb))))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except BaseException:
                pass
    return fields


def main():
    ns = {"__name__": "__main__", "__builtins__": builtins}
    send(b"H")
    while True:
        head = read_exact(4)
        if head is None:
            return
        body = read_exact(struct.unpack(">I", head)[0])
        if body is None:
            return
        if body[:1] == b"X":
            send(b"R", run_cell(body[1:].decode("utf-8", "replace"), ns))


main()
