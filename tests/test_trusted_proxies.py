"""TRUSTED_PROXIES: addresses and networks whose proxy headers are believed."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from streaming.models import Via
from streaming.proxy import client_address, client_via, is_trusted_proxy


def scope_from(peer: str, **headers: str) -> dict:
    encoded = [
        (name.replace("_", "-").encode(), value.encode())
        for name, value in headers.items()
    ]
    return {"client": (peer, 50000), "headers": encoded}


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("172.30.57.4", True),
        ("172.30.57.255", True),
        ("172.30.58.1", False),
        ("127.0.0.1", True),
        ("::1", True),
        ("::2", False),
        ("not-an-address", False),
        (None, False),
    ],
)
def test_networks_and_addresses(settings, address, expected):
    settings.TRUSTED_PROXIES = ["172.30.57.0/24", "127.0.0.1", "::1"]
    assert is_trusted_proxy(address) is expected


def test_proxy_in_network_sets_via_and_client(settings):
    settings.TRUSTED_PROXIES = ["172.30.57.0/24"]
    scope = scope_from(
        "172.30.57.6", x_wordstream_via="node", x_forwarded_for="198.51.100.2"
    )
    assert client_via(scope) == Via.NODE
    assert client_address(scope) == "198.51.100.2"


def test_peer_outside_network_is_direct(settings):
    settings.TRUSTED_PROXIES = ["172.30.57.0/24"]
    scope = scope_from(
        "172.30.58.6", x_wordstream_via="nginx", x_forwarded_for="198.51.100.2"
    )
    assert client_via(scope) == Via.DIRECT
    assert client_address(scope) == "172.30.58.6"


def test_invalid_entry_is_rejected(settings):
    settings.TRUSTED_PROXIES = ["172.30.57.0/33"]
    with pytest.raises(ImproperlyConfigured) as error:
        is_trusted_proxy("172.30.57.6")
    assert str(error.value) == (
        "TRUSTED_PROXIES must list IP addresses or networks such as "
        "172.28.0.0/16, got '172.30.57.0/33'"
    )
