# The nsbox code context driver for Python (3.8+, standard library only). It runs cells sent as
# JSON lines on stdin in one namespace that persists between them, and reports on fd 3, as
# JSON lines: stdout and stderr chunks (base64), results (MIME bundles: the last expression's
# value, display() calls, matplotlib figures), an error, and the end of each cell. What the
# interpreter's fds 1 and 2 get (subprocesses, C code) it reads itself, from fds 4 and 5 (the
# pipes' read ends), and sends before anything it sends next: everything reaches fd 3 in the
# order it was written.
import ast, base64, io, json, linecache, os, select, sys, threading, traceback

_FDS = ((4, "stdout"), (5, "stderr"))
for _fd in (3, 4, 5):
    os.set_inheritable(_fd, False)  # not for the subprocesses
for _fd, _ in _FDS:
    os.set_blocking(_fd, False)
_lock = threading.Lock()  # one sender at a time, and a pipe's read sent before the next read


def _write(line):
    """Writes a whole line on fd 3. _lock is held. A write a signal interrupts may write part of
    it, and the interrupt of a run that timed out may come in the middle: the line is finished
    first, then the KeyboardInterrupt goes on."""
    view = memoryview(line)
    interrupted = None
    while True:
        try:
            while view:
                view = view[os.write(3, view):]
            break
        except KeyboardInterrupt as e:
            interrupted = e
    if interrupted is not None:
        raise interrupted


_open = dict(_FDS)  # the pipes not at their end


def _drain():
    """Sends what fds 1 and 2 hold now. _lock is held."""
    for fd, name in list(_open.items()):
        while True:
            try:
                b = os.read(fd, 65536)
            except OSError:  # empty (BlockingIOError)
                break
            if not b:  # every write end closed (os.close(1), say)
                del _open[fd]
                break
            _write((json.dumps({"type": name, "data": base64.b64encode(b).decode()}) + "\n").encode())


def _send(ev):
    line = (json.dumps(ev) + "\n").encode()
    with _lock:
        _drain()
        _write(line)


def _pump():
    """Sends what subprocesses write while the cell runs."""
    while _open:
        select.select(list(_open), [], [])
        with _lock:
            _drain()


threading.Thread(target=_pump, daemon=True).start()


class _Stream(io.RawIOBase):
    def __init__(self, name):
        self._name = name

    def writable(self):
        return True

    def write(self, b):
        b = bytes(b)
        if b:
            _send({"type": self._name, "data": base64.b64encode(b).decode()})
        return len(b)


def _text(name):
    return io.TextIOWrapper(io.BufferedWriter(_Stream(name)), encoding="utf-8",
                            errors="surrogateescape", line_buffering=True, write_through=True)


sys.stdout, sys.stderr = _text("stdout"), _text("stderr")

_REPRS = (("_repr_html_", "text/html"), ("_repr_markdown_", "text/markdown"), ("_repr_svg_", "image/svg+xml"),
          ("_repr_png_", "image/png"), ("_repr_jpeg_", "image/jpeg"), ("_repr_json_", "application/json"))


def _bundle(value):
    out = {"text/plain": repr(value)}
    for method, mime in _REPRS:
        f = getattr(value, method, None)
        if not callable(f):
            continue
        try:
            r = f()
        except Exception:
            continue
        if r is None:
            continue
        if isinstance(r, (bytes, bytearray)):
            r = base64.b64encode(r).decode()
        out[mime] = r
    if isinstance(value, (dict, list)):
        try:
            json.dumps(value)
            out["application/json"] = value
        except (TypeError, ValueError):
            pass
    return out


def display(*values):
    """Shows each value as a result of the running cell."""
    for v in values:
        _send({"type": "result", "data": _bundle(v)})


def _figures():
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    for n in plt.get_fignums():
        fig = plt.figure(n)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        _send({"type": "result", "data": {"image/png": base64.b64encode(buf.getvalue()).decode(), "text/plain": repr(fig)}})
    plt.close("all")


_globals = {"__name__": "__main__", "__builtins__": __builtins__, "display": display}


_cells = 0


def _run(code):
    global _cells
    _cells += 1
    name = "<cell %d>" % _cells
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)  # tracebacks show the code
    tree = ast.parse(code, name, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, name, "exec"), _globals)
    if last is not None:
        value = eval(compile(last, name, "eval"), _globals)
        if value is not None:
            _send({"type": "result", "data": _bundle(value)})
    _figures()


def _main():
    requests = sys.stdin.buffer
    while True:
        try:
            line = requests.readline()
        except KeyboardInterrupt:  # an interrupt that came after its cell ended
            continue
        if not line:
            return
        try:
            _run(json.loads(line)["code"])
        except BaseException as e:  # KeyboardInterrupt (a timeout) and SystemExit too: the context goes on
            tb = traceback.format_exception(type(e), e, e.__traceback__)
            _send({"type": "error", "name": type(e).__name__, "value": str(e), "traceback": "".join(tb)})
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:
                pass
            _send({"type": "end"})


_main()
