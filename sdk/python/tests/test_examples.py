"""The example scripts run as a user would run them, from the repository root."""
import os
import subprocess
import sys
import unittest

from tests.helpers import needs_daemon

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")


@needs_daemon
class ExamplesTest(unittest.TestCase):
    def test_done_when(self):
        out = subprocess.run([sys.executable, "sdk/python/examples/done_when.py"], cwd=ROOT, capture_output=True, text=True, timeout=600)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("100 MB file: wrote 104857600 bytes", out.stdout)
        self.assertIn("served from nsbox", out.stdout)
        self.assertIn("removed", out.stdout)
