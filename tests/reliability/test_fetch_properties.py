"""fetch.address_acceptable over generated addresses (pure function; nothing is connected to).

Every address inside a non-global range is refused, whether written as IPv4 or embedded in IPv6
(IPv4-mapped, well-known NAT64, 6to4, IPv4-compatible, Teredo); generated global addresses, plain
or embedded in a form that is judged by its IPv4, are accepted. The ranges here are written out
independently of darkroom.fetch's own tables (RFC 6890 / IANA special-purpose registries).
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from darkroom.fetch import address_acceptable

pytestmark = pytest.mark.reliability

SETTINGS = settings(max_examples=300, derandomize=True, database=None, deadline=None)
V4, V6 = ipaddress.IPv4Network, ipaddress.IPv6Network

REFUSED_V4 = [
    V4(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
    )
]
# Special-purpose but globally reachable (AS112, AMT, ...): either answer is defensible, so the
# "global" generator below stays out of them.
AMBIGUOUS_V4 = [V4(n) for n in ("192.31.196.0/24", "192.52.193.0/24", "192.175.48.0/24")]
REFUSED_V6 = [
    V6(n)
    for n in (
        "::/128",
        "::1/128",
        "::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/32",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
        "fd00:ec2::254/128",
    )
]
NAT64 = int(ipaddress.IPv6Address("64:ff9b::"))


def _in(network_strategy):
    return network_strategy.flatmap(lambda net: st.integers(0, net.num_addresses - 1).map(lambda offset: net[offset]))


refused_v4 = _in(st.sampled_from(REFUSED_V4))
refused_v6 = _in(st.sampled_from(REFUSED_V6))
global_v4 = (
    st.integers(0, 2**32 - 1)
    .map(ipaddress.IPv4Address)
    .filter(lambda a: not any(a in n for n in REFUSED_V4 + AMBIGUOUS_V4))
)
# 2000::/3 minus 2001::/16 (IETF special-purpose sub-blocks), 2002::/16 (6to4, tested separately),
# 3fff::/16 (documentation since RFC 9637) and AS112-v6 (special-purpose but global).
AMBIGUOUS_V6 = [V6(n) for n in ("2001::/16", "2002::/16", "2620:4f:8000::/48")]
global_v6 = (
    st.integers(int(ipaddress.IPv6Address("2000::")), int(ipaddress.IPv6Address("3fff::")) - 1)
    .map(ipaddress.IPv6Address)
    .filter(lambda a: not any(a in n for n in AMBIGUOUS_V6))
)


def mapped(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(0xFFFF << 32 | int(v4))


def nat64(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(NAT64 | int(v4))


def six_to_four(v4: ipaddress.IPv4Address, rest: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(0x2002 << 112 | int(v4) << 80 | rest)


def compatible(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(int(v4))


def teredo(v4: ipaddress.IPv4Address, rest: int) -> ipaddress.IPv6Address:
    # 2001:0::/32, server IPv4 in bits 32-63, the client's obfuscated IPv4 in the low 32 bits.
    return ipaddress.IPv6Address(0x20010000 << 96 | int(v4) << 64 | rest << 32 | (int(v4) ^ 0xFFFFFFFF))


@given(refused_v4, st.integers(0, 2**80 - 1), st.integers(0, 2**32 - 1))
@SETTINGS
def test_non_global_ipv4_is_refused_in_every_form(address, rest80, rest32):
    for form in (
        address,
        mapped(address),
        nat64(address),
        six_to_four(address, rest80),
        compatible(address),
        teredo(address, rest32),
    ):
        assert not address_acceptable(form), f"{form} (embeds {address}) was accepted"


@given(refused_v6)
@SETTINGS
def test_non_global_ipv6_is_refused(address):
    assert not address_acceptable(address), f"{address} was accepted"


@given(global_v4, st.integers(0, 2**80 - 1), st.integers(0, 2**32 - 1))
@SETTINGS
def test_global_ipv4_is_accepted_plain_and_in_forms_judged_by_it(address, rest80, rest32):
    assert address_acceptable(address), f"{address} was refused"
    assert address_acceptable(mapped(address)), f"{mapped(address)} was refused"
    assert address_acceptable(nat64(address)), f"{nat64(address)} was refused"
    assert address_acceptable(six_to_four(address, rest80)), f"{six_to_four(address, rest80)} was refused"
    # Forms that are refused whatever they embed: deprecated IPv4-compatible (when not in ::/96's
    # special zero region it is still inside ::/96) and Teredo.
    assert not address_acceptable(compatible(address))
    assert not address_acceptable(teredo(address, rest32))


@given(global_v6)
@SETTINGS
def test_global_ipv6_is_accepted_and_never_with_a_zone(address):
    assert address_acceptable(address), f"{address} was refused"
    assert not address_acceptable(ipaddress.IPv6Address(f"{address}%eth0"))


def test_spot_checks():
    for text in (
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ):
        assert address_acceptable(ipaddress.ip_address(text)), text
    for text in (
        "169.254.169.254",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::",
        "2002:7f00:1::",
        "::127.0.0.1",
        "100.64.0.1",
        "fe80::1",
        "::",
        "0.0.0.0",  # noqa: S104
        "255.255.255.255",
        "64:ff9b:1::a00:1",
        "2001:0:4136:e378::",
    ):
        assert not address_acceptable(ipaddress.ip_address(text)), text
