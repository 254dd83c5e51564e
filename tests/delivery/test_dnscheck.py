"""DNS checks against a local dnslib server: parsing NUDGE_DNS_NAMESERVERS, records split into strings,
and a lookup that gets no answer is bounded in time and reported as a failure, not as "missing"."""
import socket

import pytest

from nudge.delivery import dnscheck


def test_nameservers_parse_host_and_port():
    assert dnscheck.parse_nameservers("127.0.0.1:5353, 10.0.0.1,[::1]:53,[2001:db8::1]") == [
        ("127.0.0.1", 5353), ("10.0.0.1", 53), ("::1", 53), ("2001:db8::1", 53)]
    assert dnscheck.parse_nameservers("") == []
    for bad in ("host:port", "host:0", ":53"):
        with pytest.raises(ValueError):
            dnscheck.parse_nameservers(bad)


def test_txt_records_join_their_strings_and_a_missing_name_is_empty(dns_zone):
    resolver = dnscheck.make_resolver([("127.0.0.1", dns_zone.port)], timeout=2)
    long_value = "v=DKIM1; k=rsa; p=" + "A" * 600
    dns_zone.publish("s1._domainkey.shop.example", long_value)
    assert dnscheck.txt_records(resolver, "s1._domainkey.shop.example") == [long_value]
    assert dnscheck.txt_records(resolver, "nothing.shop.example") == []
    assert dns_zone.queries == ["s1._domainkey.shop.example", "nothing.shop.example"]


def test_a_silent_server_fails_within_the_timeout():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:     # bound, never answers
        silent.bind(("127.0.0.1", 0))
        resolver = dnscheck.make_resolver([silent.getsockname()], timeout=0.5)
        with pytest.raises(dnscheck.LookupFailed):
            dnscheck.txt_records(resolver, "shop.example")
        found = dnscheck.check_domain(resolver, "shop.example", token="abc", selector="s1", dkim_record="v=DKIM1; p=x")
    assert {name: check["status"] for name, check in found.items()} == {
        "verify": "error", "spf": "error", "dkim": "error", "dmarc": "error"}
    assert found["verify"]["expected"] == "nudge-verify=abc"
