"""The chat page is served with a Content-Security-Policy that allows only its own files."""

from __future__ import annotations

from tests.e2e.conftest import Server


def test_the_page_has_a_strict_content_security_policy(server: Server) -> None:
    with server.client() as http:
        response = http.get("/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
