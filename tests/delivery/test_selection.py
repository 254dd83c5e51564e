"""Provider selection from the environment, and failover between real providers."""
import os

import pytest

from nudge.config import load_config
from nudge.delivery.base import SendResult
from nudge.delivery.message import compose_message
from nudge.delivery.outbox import count_outbox
from nudge.delivery.selection import (
    FailoverSender, configured_providers, make_provider, provider_factory, providers_for, send_wave,
)
from nudge.delivery.smtp import SMTPProvider


def config_from(tmp_path, **env):
    return load_config({"NUDGE_INSTANCE_PATH": str(tmp_path), **{f"NUDGE_{k}": v for k, v in env.items()}})


def test_nothing_configured_means_the_outbox_in_the_instance_folder(tmp_path):
    config = config_from(tmp_path)
    assert configured_providers(config) == ["outbox"]
    assert providers_for("marketing", 50_000, config) == ["outbox"]
    assert make_provider("outbox", config).directory == os.path.join(str(tmp_path), "outbox")


def test_spec_rules_small_or_transactional_versus_bulk(tmp_path):
    config = config_from(tmp_path, SMTP_URL="smtp://relay:25", SES_REGION="eu-west-1", SENDGRID_API_KEY="SG.k")
    assert configured_providers(config) == ["smtp", "ses", "sendgrid"]
    assert providers_for("marketing", 999, config) == ["sendgrid", "ses", "smtp"]
    assert providers_for("marketing", 1000, config) == ["ses", "sendgrid", "smtp"]
    assert providers_for("transactional", 1, config) == ["sendgrid", "ses", "smtp"]
    assert providers_for("transactional", 10_000, config) == ["sendgrid", "ses", "smtp"]
    assert providers_for("test", 5, config) == ["sendgrid", "ses", "smtp"]
    with pytest.raises(ValueError):
        providers_for("newsletter", 5, config)


def test_orders_and_threshold_are_configurable(tmp_path):
    config = config_from(tmp_path, SMTP_URL="smtp://relay:25", SES_REGION="eu-west-1",
                         OUTBOX_DIR=str(tmp_path / "box"), BULK_THRESHOLD="50",
                         PROVIDERS_SMALL="smtp, outbox", PROVIDERS_BULK="sendgrid,ses")
    assert configured_providers(config) == ["smtp", "ses", "outbox"]
    assert providers_for("marketing", 49, config) == ["smtp", "outbox"]
    assert providers_for("marketing", 50, config) == ["ses"]        # sendgrid is not configured
    only_unconfigured = config_from(tmp_path, SMTP_URL="smtp://relay:25", PROVIDERS_BULK="sendgrid")
    assert providers_for("marketing", 5000, only_unconfigured) == ["smtp"]
    with pytest.raises(ValueError, match="sengrid"):
        config_from(tmp_path, PROVIDERS_SMALL="sengrid,ses")


def test_failover_to_the_next_provider_when_the_first_is_down(tmp_path, smtp_server, closed_port, make_message):
    server = smtp_server()
    providers = {
        "smtp": SMTPProvider(f"smtp://127.0.0.1:{closed_port}", local_hostname="t"),
        "ses": SMTPProvider(f"smtp://127.0.0.1:{server.port}", local_hostname="t", name="ses"),
    }
    sender = FailoverSender(["smtp", "ses"], providers.__getitem__)
    message = make_message()
    result = sender.send(message, compose_message(message))
    sender.close()
    assert result.status == "sent" and result.provider == "ses"
    assert [m.rcpt_tos for m in server.messages] == [["ann@example.org"]]


def test_a_permanent_rejection_is_final(tmp_path, smtp_server, make_message):
    server = smtp_server()
    server.handler.reject = {"gone@example.org": "550 5.1.1 User unknown"}
    config = config_from(tmp_path, SMTP_URL=f"smtp://127.0.0.1:{server.port}", OUTBOX_DIR=str(tmp_path / "box"))
    sender = FailoverSender(providers_for("transactional", 1, config), provider_factory(config))
    assert sender.names == ["smtp", "outbox"]
    message = make_message("gone@example.org")
    result = sender.send(message, compose_message(message))
    sender.close()
    assert result.status == "permanent" and "User unknown" in result.error
    assert count_outbox(str(tmp_path / "box"), None) == 0


def test_in_a_wave_only_the_messages_the_first_provider_deferred_go_to_the_next(tmp_path, smtp_server,
                                                                                 make_message):
    server = smtp_server(pipelining=True)
    server.handler.reject = {"later@example.org": "451 4.7.1 Greylisted, try again later",
                             "gone@example.org": "550 5.1.1 User unknown"}
    config = config_from(tmp_path, SMTP_URL=f"smtp://127.0.0.1:{server.port}", OUTBOX_DIR=str(tmp_path / "box"))
    senders = [FailoverSender(["smtp", "outbox"], provider_factory(config)) for _ in range(4)]
    messages = [make_message(address) for address in
                ("ann@example.org", "later@example.org", "gone@example.org", "bob@example.org")]
    results = send_wave(senders, [(message, compose_message(message)) for message in messages])
    for sender in senders:
        sender.close()
    assert [(r.status, r.provider) for r in results] == [
        ("sent", "smtp"), ("sent", "outbox"), ("permanent", "smtp"), ("sent", "smtp")]
    assert sorted(m.rcpt_tos[0] for m in server.messages) == ["ann@example.org", "bob@example.org"]
    assert count_outbox(str(tmp_path / "box"), None) == 1


def test_all_transient_is_transient_with_every_reason(closed_port, make_message):
    sender = FailoverSender(["smtp", "ses"], lambda name: SMTPProvider(f"smtp://127.0.0.1:{closed_port}",
                                                                       local_hostname="t", name=name))
    message = make_message()
    result = sender.send(message, compose_message(message))
    assert result == SendResult("transient", "ses", error=result.error, retry_after=result.retry_after)
    assert result.error.startswith("smtp: cannot connect") and "; ses: cannot connect" in result.error


def test_composing_is_needed_unless_every_provider_builds_its_own(tmp_path):
    config = config_from(tmp_path, SENDGRID_API_KEY="SG.k", OUTBOX_DIR=str(tmp_path / "box"))
    assert FailoverSender(["sendgrid"], provider_factory(config)).needs_raw is False
    assert FailoverSender(["sendgrid", "outbox"], provider_factory(config)).needs_raw is True
