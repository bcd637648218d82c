"""The issue's "done when" scenario with nothing but the SDK: a session that keeps cd and
export, a streamed command, a 100 MB file written and read, a web server exposed and
fetched, and the sandbox removed. Run from the repository root as root:

    python3 sdk/python/examples/done_when.py          # the local daemon (or $NSBOX_HOST)
"""
import hashlib
import sys
import urllib.request

sys.path.insert(0, "sdk/python")

from nsbox import Client  # noqa: E402

MB = 1 << 20


def main() -> None:
    client = Client()
    with client.sandbox() as sb:
        print("sandbox", sb.id)
        with sb.session(cwd="/tmp") as s:
            s.exec("mkdir -p /workspace/app && cd /workspace/app && export GREETING=hello")
            res = s.exec('echo "$GREETING from $(pwd)"')
            assert res.text == "hello from /workspace/app\n", res
            print("session:", res.text.strip())

        for ev in sb.exec_stream("for i in 1 2 3; do echo line $i; sleep 0.1; done"):
            if ev.type == "stdout":
                print("streamed:", ev.data.decode().strip())
            elif ev.type == "exit":
                assert ev.result.exit_code == 0

        block = b"nsbox" * (MB // 5) + b"x" * (MB % 5)  # 1 MiB
        info = sb.files.write("/workspace/big.bin", (block for _ in range(100)))
        digest, n = hashlib.sha256(), 0
        with sb.files.open("/workspace/big.bin") as f:
            while chunk := f.read(MB):
                digest.update(chunk)
                n += len(chunk)
        assert n == info.size == 100 * MB
        assert digest.hexdigest() == hashlib.sha256(block * 100).hexdigest()
        print(f"100 MB file: wrote {info.size} bytes, read {n} back, same sha256")

        sb.files.write("/workspace/site/index.html", b"<h1>served from nsbox</h1>\n", make_parents=True)
        web = sb.processes.start(["python3", "-m", "http.server", "8000", "--directory", "/workspace/site"])
        web.wait_for_port(8000, timeout_ms=20000)
        port = sb.ports.expose(8000)
        with urllib.request.urlopen(port.url, timeout=30) as resp:  # http://127.0.0.1:HOSTPORT
            body = resp.read()
        assert body == b"<h1>served from nsbox</h1>\n", body
        print("fetched", port.url, "->", body.decode().strip())
    print("removed", sb.id)


if __name__ == "__main__":
    main()
