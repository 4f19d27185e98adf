"""Gateway settings: flags win over AIGP_BRIDGE_* variables, which win over defaults; bad ones
are refused before anything listens."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigp_otel_bridge.frontdoors.gateway import Endpoint, GatewayError, gateway_settings


def test_defaults_are_loopback() -> None:
    settings = gateway_settings(environ={})
    assert settings.grpc_endpoint == Endpoint("127.0.0.1", 4317)
    assert settings.http_endpoint == Endpoint("127.0.0.1", 4318)
    assert (settings.auth_token, settings.tls, settings.max_request_bytes) == (None, None, 16 * 1024 * 1024)
    assert (settings.root_wait_s, settings.link_wait_s) == (1.0, 10.0)


def test_the_waits_come_from_the_environment() -> None:
    settings = gateway_settings(environ={"AIGP_BRIDGE_ROOT_WAIT_S": "0.5", "AIGP_BRIDGE_LINK_WAIT_S": "0"})
    assert (settings.root_wait_s, settings.link_wait_s) == (0.5, 0.0)
    for bad in ("-1", "soon", "7200"):
        with pytest.raises(GatewayError, match="AIGP_BRIDGE_LINK_WAIT_S must be a number of seconds"):
            gateway_settings(environ={"AIGP_BRIDGE_LINK_WAIT_S": bad})


def test_flags_win_over_the_environment(tmp_path: Path) -> None:
    environ = {"AIGP_BRIDGE_GRPC_ENDPOINT": "0.0.0.0:5317", "AIGP_BRIDGE_HTTP_ENDPOINT": "none",
               "AIGP_BRIDGE_AUTH_TOKEN": "from-env", "AIGP_BRIDGE_MAX_REQUEST_BYTES": "1000"}
    from_env = gateway_settings(environ=environ)
    assert (from_env.grpc_endpoint, from_env.http_endpoint) == (Endpoint("0.0.0.0", 5317), None)
    assert (from_env.auth_token, from_env.max_request_bytes) == ("from-env", 1000)
    token = tmp_path / "token"
    token.write_text("from-file\n")
    flagged = gateway_settings(grpc_endpoint="[::1]:6317", http_endpoint="127.0.0.1:6318",
                               auth_token_file=str(token), max_request_bytes=50, environ=environ)
    assert (flagged.grpc_endpoint, str(flagged.grpc_endpoint)) == (Endpoint("::1", 6317), "[::1]:6317")
    assert flagged.http_endpoint == Endpoint("127.0.0.1", 6318)
    assert (flagged.auth_token, flagged.max_request_bytes) == ("from-file", 50)


@pytest.mark.parametrize("arguments, message", [
    ({"grpc_endpoint": "4317"}, "HOST:PORT"),
    ({"http_endpoint": "localhost:99999"}, "HOST:PORT"),
    ({"grpc_endpoint": "none", "http_endpoint": "none"}, "both receivers are turned off"),
    ({"tls_cert_file": "cert.pem"}, "both --tls-cert-file and --tls-key-file"),
    ({"tls_cert_file": "missing.pem", "tls_key_file": "missing.key"}, "TLS file not found"),
    ({"auth_token_file": "missing-token"}, "cannot read --auth-token-file"),
    ({"max_request_bytes": 0}, "must be positive"),
])
def test_bad_settings_say_why(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(GatewayError, match=message):
        gateway_settings(environ={}, **arguments)  # type: ignore[arg-type]
