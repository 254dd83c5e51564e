"""Where a tenant may make this server connect: public internet addresses only.

An account's own SMTP relay is a host and port typed by a tenant; connecting to it from inside the
operator's network must not reach the operator's own services (the loopback interface, a private LAN, the
cloud metadata address 169.254.169.254, ...). The host is resolved once, every address it resolves to is
checked (one private answer refuses them all: a name may answer differently on the next lookup, which is
how DNS rebinding works), and the caller connects to the checked addresses only.

    addresses = public_addresses("smtp.example.com", 587)      # ["93.184.215.14"] or DestinationRefused
"""
import ipaddress
import socket

# RFC 6052's well-known NAT64 prefix: a NAT64 gateway forwards 64:ff9b::a.b.c.d to a.b.c.d.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class DestinationRefused(Exception):
    """The host does not resolve to public internet addresses only (reason: "loopback", "private", ...,
    or "not found"). The message never names the resolved address (an internal name's address is the
    operator's business, not the tenant's)."""

    def __init__(self, reason, literal=False):
        super().__init__(reason)
        self.reason = reason
        self.literal = literal      # the host was an IP address (not a name)


# How each refusal reads in a sentence ("the relay's address is a loopback address").
REASON_WORDS = {"loopback": "a loopback address", "private": "a private address", "link-local": "a link-local address",
                "multicast": "a multicast address", "unspecified": "an unspecified address",
                "reserved": "a reserved address", "not publicly routable": "an address that is not publicly routable",
                "not found": "not a valid address"}


def refusal(address):
    """Why an IP address is not a public internet address ("loopback", "private", "link-local", "multicast",
    "unspecified", "reserved", "not publicly routable"), or None when it is one."""
    ip = ipaddress.ip_address(address)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        reason = refusal(embedded)
        if reason:
            return reason
    checks = (("loopback", ip.is_loopback), ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
              ("unspecified", ip.is_unspecified), ("private", ip.is_private), ("reserved", ip.is_reserved),
              ("private", ip.version == 6 and ip.is_site_local))
    for reason, flagged in checks:
        if flagged:
            return reason
    return None if ip.is_global else "not publicly routable"


def _embedded_ipv4(ip):
    """The IPv4 address an IPv6 address carries to (IPv4-mapped, 6to4, Teredo, NAT64), or None."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def system_resolve(host, port):
    """The addresses the system resolver gives for host (IPv4 and IPv6), in its order."""
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def public_addresses(host, port, *, allow_private=False, resolve=None):
    """The addresses to connect to for host:port, each checked (unless allow_private); raises
    DestinationRefused when one of them is not public or the name does not resolve.

    resolve(host, port) -> [address, ...] is system_resolve unless given (tests pass their own)."""
    literal = _is_literal(host)
    try:
        found = (resolve or system_resolve)(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise DestinationRefused("not found", literal) from exc
    addresses = list(dict.fromkeys(address.split("%", 1)[0] if ":" in address else address for address in found))
    if not addresses:
        raise DestinationRefused("not found", literal)
    if not allow_private:
        for address in addresses:
            reason = refusal(address)
            if reason:
                raise DestinationRefused(reason, literal)
    return addresses


def _is_literal(host):
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def connect_any(addresses, port, timeout, source_address=None):
    """A TCP connection to the first of addresses that answers (IP addresses: no name is looked up again)."""
    error = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout, source_address)
        except OSError as exc:
            error = exc
    raise error
