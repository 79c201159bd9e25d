"""Sandbox side of a code verification (standard library only; runs inside the jail).

Receives the program's source as the first request (nothing of the program is a file the host
reads back), runs it, then serves calls from the harness over two pipes: requests on fd
``argv[1]``, responses on fd ``argv[2]``. It never decides pass or fail: the
hidden tests run on the harness side, which only receives plain values (see codec.py). Whatever the
program does to this process (exit, patch builtins, print, kill itself) can only make it fail.
"""

import os
import sys

import codec  # copied beside this file

MAX_MESSAGE = 8 << 20


def _send(fd, message):
    data = codec.dumps(message)
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _error(exc):
    import traceback  # only when there is an error: it costs the start-up of every program

    lines = traceback.format_exception_only(type(exc), exc)
    return {"type": type(exc).__name__, "message": "".join(lines).strip()[-2000:]}


def _lines(fd):
    buffer = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        buffer += chunk
        if len(buffer) > MAX_MESSAGE:
            return
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line


def main():
    request_fd, response_fd = int(sys.argv[1]), int(sys.argv[2])
    requests = _lines(request_fd)
    first = codec.loads(next(requests, b"{}"))
    source = first.get("program")
    if not isinstance(source, str):
        return
    namespace = {"__name__": "__sandbox__", "__builtins__": __builtins__}
    try:
        exec(compile(source, "program.py", "exec"), namespace)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the program failed to load
        _send(response_fd, {"load_error": _error(exc)})
        return
    callables = sorted(
        name for name, value in namespace.items() if callable(value) and not name.startswith("__")
    )
    _send(response_fd, {"ready": callables})
    for line in requests:
        request = codec.loads(line)
        try:
            args = codec.decode(request["args"])
            kwargs = codec.decode(request["kwargs"])
            result = namespace[request["call"]](*args, **kwargs)
            reply = {"ok": codec.encode(result)}
        except BaseException as exc:
            reply = {"error": _error(exc)}
        _send(response_fd, reply)


if __name__ == "__main__":
    main()
