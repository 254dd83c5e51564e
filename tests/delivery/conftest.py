"""Real servers on loopback for the delivery tests: aiosmtpd (plain, STARTTLS + AUTH, implicit TLS)
with a self-signed certificate made here, and free/closed port helpers."""
import asyncio
import datetime
import ipaddress
import re
import socket
import ssl
import threading
from dataclasses import dataclass

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

USERNAME = "mailer@shop.example"
PASSWORD = "p@ss:w/rd %42"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def closed_port():
    """A loopback port nobody listens on (connection refused)."""
    return free_port()


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list
    content: bytes


class RecordingHandler:
    """Accepts mail and keeps it; rejects chosen recipients with a chosen reply."""

    def __init__(self, pipelining=False):
        self.pipelining = pipelining
        self.messages = []
        self.reject = {}
        self.peers = set()
        self.protocols = []
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.lock:
            self.peers.add(session.peer)
            self.protocols.append(server)
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.reject:
            return self.reject[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            number = len(self.messages)
        return f"250 2.0.0 Ok: queued as Q{number:05d}"


class SMTPServer:
    def __init__(self, controller, handler, port):
        self.controller = controller
        self.handler = handler
        self.port = port

    @property
    def messages(self):
        return self.handler.messages

    @property
    def connections(self):
        """How many client connections have said EHLO (STARTTLS's second EHLO is the same peer)."""
        return len(self.handler.peers)

    def drop_connections(self):
        """Close every client connection from the server side, as a relay closing idle ones does."""
        done = threading.Event()

        def close_all():
            for protocol in self.handler.protocols:
                if protocol.transport is not None:
                    protocol.transport.close()
            done.set()
        self.controller.loop.call_soon_threadsafe(close_all)
        done.wait(5)


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login.decode() == USERNAME and auth_data.password.decode() == PASSWORD
    return AuthResult(success=ok, handled=False)


def self_signed_certificate(folder, dns_names, ip_addresses=()):
    """(cert path, key path) of a self-signed certificate for these names and addresses, written in folder."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    alternative = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alternative), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """(cert path, key path) of a self-signed certificate for 127.0.0.1 and localhost."""
    return self_signed_certificate(tmp_path_factory.mktemp("tls"), ["localhost"], ["127.0.0.1"])


@pytest.fixture
def smtp_server(certificate):
    """start(tls=None|"starttls"|"ssl", auth=False, pipelining=False, server_certificate=None) -> a running
    SMTPServer (server_certificate: (cert, key) paths instead of the localhost one)."""
    started = []

    def start(tls=None, auth=False, pipelining=False, server_certificate=None):
        handler = RecordingHandler(pipelining=pipelining)
        port = free_port()
        options = {}
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*(server_certificate or certificate))
            options["ssl_context" if tls == "ssl" else "tls_context"] = context
            if tls == "starttls":
                options["require_starttls"] = True
        if auth:
            # aiosmtpd only knows about STARTTLS: an implicit-TLS connection would hide AUTH.
            options.update(authenticator=_authenticator, auth_require_tls=tls == "starttls")
        controller = Controller(handler, hostname="127.0.0.1", port=port, loop=asyncio.new_event_loop(),
                                **options)
        controller.start()
        server = SMTPServer(controller, handler, port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.controller.stop()


@pytest.fixture
def client_tls(certificate):
    """An SSL context that trusts the test certificate."""
    return ssl.create_default_context(cafile=certificate[0])


HTML = ("<!doctype html><html><body><h1>Nouveautés de mars</h1>\n"
        "<p>Bonjour {name}, voici l'offre: <a href=\"https://shop.example/c/abc?x=1&amp;y=2\">voir</a></p>\n"
        + "<p>" + "Une très longue ligne sans retour à la ligne, " * 60 + "</p>\n"
        + ".a line that starts with a dot\n.\n" + "<p>fin</p></body></html>\n")
TEXT = "Bonjour {name},\n\nVoici l'offre: https://shop.example/c/abc\n.dot at line start\n\n-- \nShop\n"


@pytest.fixture
def make_message():
    """make_message(to_email, **fields) -> a personalised OutgoingMessage like a campaign's."""
    from nudge.delivery.message import OutgoingMessage, list_unsubscribe_headers, message_id_for

    def make(to_email="ann@example.org", **fields):
        name = fields.pop("to_name", "Ann Oñate")
        contact = re.sub(r"[^A-Za-z0-9]", "_", to_email.split("@")[0])
        values = dict(
            from_email="news@shop.example", from_name="Shöp « News »", to_email=to_email, to_name=name,
            subject=f"Nouveautés pour {name} ✨", html=HTML.format(name=name), text=TEXT.format(name=name),
            message_id=message_id_for("c0ffee", contact, "shop.example"),
            reply_to="help@shop.example",
            headers=[*list_unsubscribe_headers("https://shop.example/t/u/tok123"),
                     ("X-Nudge-Message-Id", "m-" + contact)])
        values.update(fields)
        return OutgoingMessage(**values)
    return make
