"""The client over TLS with a token (cmd/nsbox's TestSDKRemote sets NSBOX_HOST=https://…, NSBOX_TOKEN, NSBOX_CA)."""
import os
import unittest

from tests.helpers import name

import nsbox


@unittest.skipUnless(os.environ.get("NSBOX_HOST", "").startswith("https://"), "needs a TLS listener in NSBOX_HOST")
class RemoteTest(unittest.TestCase):
    def test_tls_and_tokens(self):
        admin = nsbox.Client(host=os.environ["NSBOX_HOST"], token=os.environ["NSBOX_TOKEN"], ca=os.environ["NSBOX_CA"], timeout=120)
        self.assertTrue(admin.version())
        with self.assertRaises(nsbox.Unauthorized):
            nsbox.Client(token="wrong").list_sandboxes()
        with self.assertRaises(nsbox.DaemonUnreachable):
            nsbox.Client(ca="/etc/ssl/certs/ca-certificates.crt").version()  # the daemon's certificate is not trusted
        with admin.sandbox(id=name("remote")) as sb:
            self.assertEqual(sb.exec("echo over tls").text, "over tls\n")
            sb.files.write("/tmp/x", b"bytes")
            self.assertEqual(sb.files.read("/tmp/x"), b"bytes")
            with sb.session(id="ro", permission="read"):
                pass
            # A read token of the sandbox: reads, but may not write.
            tok = admin.create_token(sb.id, "read", 600)
            self.assertIn(tok.id, [t.id for t in admin.list_tokens()])
            reader = nsbox.Client(token=tok.secret)
            self.assertEqual(reader.get_sandbox(sb.id).files.read("/tmp/x"), b"bytes")
            with self.assertRaises(nsbox.Forbidden):
                reader.get_sandbox(sb.id).files.write("/tmp/y", b"no")
            with self.assertRaises(nsbox.Forbidden):
                reader.list_sandboxes()
            admin.revoke_token(tok.id)
            with self.assertRaises(nsbox.Unauthorized):
                reader.get_sandbox(sb.id)
            # The terminal over TLS.
            with sb.session(id="term") as s:
                with s.terminal() as term:
                    term.write("echo $((40+2))\r")
                    term.read_until(b"42")
                # A token held to this one session, with the URLs to hand to a browser.
                st = s.create_token(ttl_seconds=300)
                host = os.environ["NSBOX_HOST"]
                self.assertEqual((st.sandbox, st.session, st.permission, st.api), (sb.id, "term", "write", host))
                self.assertEqual(st.page, f"{host}/ui/terminal?sandbox={sb.id}&session=term#token={st.secret}")
                self.assertTrue(st.terminal.startswith("wss://127.0.0.1:"), st.terminal)
                held = nsbox.Client(token=st.secret).get_sandbox(sb.id)
                self.assertEqual(held.get_session("term").exec("echo held").text, "held\n")
                with self.assertRaises(nsbox.Forbidden):
                    held.exec("echo other")  # the default session is not this one
                self.assertEqual(s.create_token(permission="read").permission, "read")
                with self.assertRaises(nsbox.InvalidArgument):
                    s.create_token(permission="owner")
