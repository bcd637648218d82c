"""Shared by the SDK's tests: they run against the daemon in $NSBOX_HOST (cmd/nsbox/sdk_test.go starts one)."""
import os
import sys
import unittest
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import nsbox  # noqa: E402


def needs_daemon(cls):
    """Skips a test class unless $NSBOX_HOST names a daemon."""
    return unittest.skipUnless(os.environ.get("NSBOX_HOST"), "NSBOX_HOST names no daemon (run through cmd/nsbox's TestSDKPython)")(cls)


def name(prefix: str) -> str:
    """A sandbox id of its own for a test."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def client() -> nsbox.Client:
    return nsbox.Client(timeout=120)
