"""Test sends count against the monthly email limit and are capped per account per hour (in the database,
which every process sees)."""
import datetime as dt

import pytest

from nudge.errors import LimitExceeded, RateLimited
from nudge.models.types import utcnow
from nudge.services import campaigns, sending_settings, usage
from tests.campaign_helpers import add_contacts, fake_pipeline, ready_campaign


@pytest.fixture
def app(make_app, tmp_path):
    return make_app(OUTBOX_DIR=str(tmp_path / "outbox"), TEST_SENDS_PER_HOUR=5)


def test_test_sends_are_capped_per_hour_with_the_seconds_to_wait(make_account, monkeypatch):
    account, owner = make_account()
    fake_pipeline(monkeypatch)
    campaign = ready_campaign(owner, account, from_email="news@shop.example")
    campaigns.send_test(owner, campaign.id, ["a@example.org", "b@example.org", "c@example.org"])
    campaigns.send_test(owner, campaign.id, ["d@example.org", "e@example.org"])
    with pytest.raises(RateLimited) as exc:
        campaigns.send_test(owner, campaign.id, ["f@example.org"])
    assert exc.value.status == 429 and exc.value.code == "RATE_LIMITED"
    assert 3500 < exc.value.retry_after <= 3600
    assert "5 test emails an hour" in exc.value.message and exc.value.details[0]["field"] == "emails"
    assert usage.test_emails_in_window(account.id, utcnow()) == 5     # the refused one is not kept
    # Another account has its own allowance.
    other, other_owner = make_account()
    usage.claim_test_sends(other, 5)


def test_the_window_slides(make_account):
    account, owner = make_account()
    start = utcnow()
    usage.claim_test_sends(account, 4, now=start)
    usage.claim_test_sends(account, 1, now=start + dt.timedelta(minutes=30))
    with pytest.raises(RateLimited) as exc:
        usage.claim_test_sends(account, 2, now=start + dt.timedelta(minutes=40))
    assert exc.value.retry_after == 20 * 60      # when the first four leave the hour
    usage.claim_test_sends(account, 4, now=start + dt.timedelta(minutes=61))


def test_test_emails_count_against_the_monthly_limit(make_account, monkeypatch):
    account, owner = make_account()
    account.monthly_email_limit = 4
    fake_pipeline(monkeypatch)
    add_contacts(account, "ann@example.org", "bob@example.org")
    campaign = ready_campaign(owner, account, from_email="news@shop.example")
    campaigns.send_test(owner, campaign.id, ["a@example.org", "b@example.org", "c@example.org"])
    assert campaigns.emails_used(account) == 3
    with pytest.raises(LimitExceeded) as exc:
        campaigns.send_test(owner, campaign.id, ["d@example.org", "e@example.org"])
    assert "This test has 2 recipients" in exc.value.message
    # The campaign's two recipients no longer fit either.
    with pytest.raises(LimitExceeded):
        campaigns.send_now(owner, campaign.id)


def test_the_settings_test_email_counts_too(make_account):
    account, owner = make_account()
    for _ in range(5):
        assert sending_settings.send_test_email(owner, account.id)["status"] == "sent"
    assert campaigns.emails_used(account) == 5
    with pytest.raises(RateLimited):
        sending_settings.send_test_email(owner, account.id)
