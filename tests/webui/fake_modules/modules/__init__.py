"""Test stand-in of the WebUI's ``modules`` package (A1111 1.6-1.10 behaviour as described in
shared/docs/a1111-api.md). TESTS ONLY: never shipped, never imported by the extension's package code."""
