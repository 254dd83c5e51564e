"""DNS checks of a sending domain: the ownership token, SPF, DKIM and DMARC (dnspython, time-bounded).

    resolver = make_resolver([("127.0.0.1", 5353)], timeout=5)    # [] = the system's resolvers
    found = check_domain(resolver, "shop.example", token="ab12…", selector="nudge",
                         dkim_record="v=DKIM1; k=rsa; p=…", spf_includes=["amazonses.com"])
    found["verify"]["status"]     # "ok", "missing", "wrong" or "error" (the lookup itself failed)

Each finding is {"status", "name", "found": [records], "expected": what to publish, "note"}. A lookup that
fails (timeout, SERVFAIL) is "error", never "missing": a resolver's bad minute must not unverify a domain.
Flask-free, no database: the service stores what this returns.
"""
from concurrent.futures import ThreadPoolExecutor

import dns.exception
import dns.nameserver
import dns.resolver

VERIFY_PREFIX = "nudge-verify="
DEFAULT_TIMEOUT = 5.0


class LookupFailed(Exception):
    """The resolver gave no answer (timeout, SERVFAIL, refused): nothing is known about the name."""


def parse_nameservers(text):
    """[(host, port)] from NUDGE_DNS_NAMESERVERS "host[:port],…" ("[v6]:port" for IPv6 with a port)."""
    servers = []
    for item in (part.strip() for part in (text or "").split(",")):
        if not item:
            continue
        host, port = item, 53
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest.startswith(":"):
                port = rest[1:]
        elif item.count(":") == 1:
            host, port = item.split(":")
        try:
            port = int(port)
        except ValueError:
            raise ValueError(f"NUDGE_DNS_NAMESERVERS: bad port in {item!r}")
        if not host or not 0 < port < 65536:
            raise ValueError(f"NUDGE_DNS_NAMESERVERS: expected host[:port], got {item!r}")
        servers.append((host, port))
    return servers


def make_resolver(nameservers=None, timeout=DEFAULT_TIMEOUT):
    """A resolver bounded to `timeout` seconds per lookup (all retries included): the given
    (host, port) servers, else the system's."""
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
    else:
        resolver = dns.resolver.Resolver()
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 2.0)
    resolver.cache = None
    return resolver


def txt_records(resolver, name):
    """The TXT strings at name (each record's parts joined, as RFC 7208 reads them); [] when there are none."""
    try:
        answer = resolver.resolve(name, "TXT", search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout) as exc:
        raise LookupFailed(str(exc) or exc.__class__.__name__)
    except dns.exception.DNSException as exc:
        raise LookupFailed(str(exc) or exc.__class__.__name__)
    return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer] if answer.rrset else []


def _finding(name, found, status, expected, note):
    return {"name": name, "found": found, "status": status, "expected": expected, "note": note}


def _lookup(resolver, name):
    """(records, None) or (None, the failure as a finding note)."""
    try:
        return txt_records(resolver, name), None
    except LookupFailed as exc:
        return None, f"The lookup failed ({exc}); it is tried again later."


def _verify(domain, token, looked):
    expected = VERIFY_PREFIX + token
    records, failed = looked
    if failed:
        return _finding(domain, [], "error", expected, failed)
    ours = [r for r in records if r.strip().startswith(VERIFY_PREFIX)]
    if any(r.strip() == expected for r in ours):
        return _finding(domain, ours, "ok", expected, "The ownership record is published.")
    if ours:
        return _finding(domain, ours, "wrong", expected, "A nudge-verify record is published, but with another token.")
    return _finding(domain, [], "missing", expected, "Publish this TXT record at the domain itself.")


def _spf(domain, includes, looked):
    """SPF: exactly one v=spf1 record, naming the server's providers when they are known."""
    suggestion = "v=spf1 " + " ".join(f"include:{name}" for name in includes) + " ~all" if includes \
        else "v=spf1 mx ~all"
    records, failed = looked
    if failed:
        return _finding(domain, [], "error", suggestion, failed)
    spf = [r for r in records if r.lower().split(" ", 1)[0] == "v=spf1"]
    if not spf:
        return _finding(domain, [], "missing", suggestion, "No SPF record: receivers cannot tell which servers may "
                                                           "send for this domain.")
    if len(spf) > 1:
        return _finding(domain, spf, "wrong", suggestion, "More than one SPF record: receivers treat that as an "
                                                          "error. Merge them into one.")
    missing = [name for name in includes if f"include:{name}" not in spf[0].lower()]
    if missing:
        return _finding(domain, spf, "wrong", suggestion, "The SPF record does not include "
                        + ", ".join(missing) + ", which this server sends through.")
    return _finding(domain, spf, "ok", suggestion, "An SPF record is published.")


def _dkim_key(record):
    """The p= value of a DKIM record without whitespace ("" when absent)."""
    for tag in record.split(";"):
        name, _, value = tag.strip().partition("=")
        if name.strip() == "p":
            return "".join(value.split())
    return ""


def _dkim(name, record, looked):
    if not record:
        return _finding(name, [], "missing", "", "This domain has no DKIM key yet.")
    records, failed = looked
    if failed:
        return _finding(name, [], "error", record, failed)
    dkim = [r for r in records if "p=" in r]
    if not dkim:
        return _finding(name, [], "missing", record, "Publish this TXT record so receivers can check the signature.")
    if any(_dkim_key(r) == _dkim_key(record) for r in dkim):
        return _finding(name, dkim, "ok", record, "The DKIM key is published.")
    return _finding(name, dkim, "wrong", record, "A different key is published under this selector: publish this "
                                                 "one (or the mail fails DKIM checks).")


def _dmarc(name, domain, looked):
    suggestion = f"v=DMARC1; p=none; rua=mailto:dmarc@{domain}"
    records, failed = looked
    if failed:
        return _finding(name, [], "error", suggestion, failed)
    dmarc = [r for r in records if r.replace(" ", "").upper().startswith("V=DMARC1")]
    if not dmarc:
        return _finding(name, [], "missing", suggestion, "No DMARC policy: large mailbox providers expect one from "
                                                         "bulk senders.")
    if len(dmarc) > 1:
        return _finding(name, dmarc, "wrong", suggestion, "More than one DMARC record: receivers ignore them all.")
    return _finding(name, dmarc, "ok", suggestion, "A DMARC policy is published.")


def check_domain(resolver, domain, *, token, selector, dkim_record, spf_includes=()):
    """{"verify", "spf", "dkim", "dmarc"}: what each lookup found and what to publish.

    The three names are looked up at once, so a check takes one lookup's time (at most the resolver's
    lifetime) however many answers are slow."""
    dkim_name, dmarc_name = f"{selector}._domainkey.{domain}", f"_dmarc.{domain}"
    names = [domain, dkim_name, dmarc_name]
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        looked = dict(zip(names, pool.map(lambda name: _lookup(resolver, name), names)))
    return {"verify": _verify(domain, token, looked[domain]),
            "spf": _spf(domain, spf_includes, looked[domain]),
            "dkim": _dkim(dkim_name, dkim_record, looked[dkim_name]),
            "dmarc": _dmarc(dmarc_name, domain, looked[dmarc_name])}
