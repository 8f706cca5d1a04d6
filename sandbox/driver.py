# driver.py - the code-interpreter session's Python side (sandbox/session.c is the host side).
#
# Runs inside the sandbox as `python3 -I -u -c <this file>`. Reads cells from fd 3 and answers
# on fd 4; the cell's own output goes to fds 1 and 2 as it is produced (the host streams it).
#
# Frames, host -> driver: a 4-byte big-endian length, then that many bytes:
#   b"X" + nonce (16 bytes) + code (UTF-8)       run a cell
# Frames, driver -> host: the nonce of the cell answered, a 4-byte big-endian length, the body:
#   b"H"                                         ready (sent once at start, nonce all zeros)
#   b"R" + fields                                a cell finished
# Fields: one byte tag, a 4-byte big-endian length, the bytes. Tags: v (repr of the last
# expression, when not None), n (exception type name), m (exception message), t (traceback).
# Each field is at most MAX_FIELD bytes (the host cuts longer ones too).
#
# Why the nonce: the cell's code runs in this process and can write to any fd it holds or can
# reopen through /proc/self/fd, the reply pipe included. The host takes only a frame that
# carries the nonce it sent with the cell, and drops every other byte on the pipe, so nothing
# a cell writes there can become an answer to another cell. For the same reason the command
# pipe is emptied after each cell: the host sends nothing while a cell runs, so what is there
# was written by the cell.
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
NONCE_LEN = 16
MAX_FIELD = 64 * 1024
TRUNCATED = b"... [truncated]"
signal.signal(signal.SIGINT, signal.SIG_IGN)


def read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(CMD, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def discard_commands():
    try:
        os.set_blocking(CMD, False)
        while os.read(CMD, 65536):
            pass
    except OSError:
        pass
    try:
        os.set_blocking(CMD, True)
    except OSError:
        pass


def send(nonce, kind, fields=()):
    body = kind
    for tag, text in fields:
        data = text.encode("utf-8", "replace")
        if len(data) > MAX_FIELD:
            keep = data[: MAX_FIELD - len(TRUNCATED)].decode("utf-8", "ignore")
            data = keep.encode("utf-8") + TRUNCATED
        body += tag + struct.pack(">I", len(data)) + data
    frame = nonce + struct.pack(">I", len(body)) + body
    while frame:
        frame = frame[os.write(REP, frame) :]


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
                if len(text) > MAX_FIELD:
                    text = text[: MAX_FIELD + 1]  # send() cuts it to MAX_FIELD bytes and marks it
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
    send(bytes(NONCE_LEN), b"H")
    while True:
        head = read_exact(4)
        if head is None:
            return
        body = read_exact(struct.unpack(">I", head)[0])
        if body is None:
            return
        if body[:1] == b"X" and len(body) > NONCE_LEN:
            fields = run_cell(body[1 + NONCE_LEN :].decode("utf-8", "replace"), ns)
            discard_commands()
            send(body[1 : 1 + NONCE_LEN], b"R", fields)


main()
