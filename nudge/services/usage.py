"""What an account has mailed against its limits: the monthly email limit (campaign recipients and test
emails) and the hourly cap on test emails. Both are counted in the database, which every web process and
worker sees.

    check_monthly_limit(account, recipients)        # LimitExceeded (403) when over the plan's month
    claim_test_sends(account, 3)                    # records them; RateLimited (429) over the hourly cap
"""
import datetime as dt
import math
import zoneinfo

import sqlalchemy as sa
from flask import current_app

from nudge.errors import LimitExceeded, RateLimited
from nudge.extensions import db
from nudge.models import Campaign, TestSend
from nudge.models.types import utcnow

TEST_WINDOW = dt.timedelta(hours=1)
DEFAULT_TEST_SENDS_PER_HOUR = 50


def account_zone(account):
    try:
        return zoneinfo.ZoneInfo(account.timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def month_start(account, when):
    """The first instant (naive UTC) of the calendar month, in the account's time zone, containing when."""
    zone = account_zone(account)
    local = when.replace(tzinfo=dt.timezone.utc).astimezone(zone)
    first = dt.datetime(local.year, local.month, 1, tzinfo=zone)
    return first.astimezone(dt.timezone.utc).replace(tzinfo=None)


def next_month_start(account, when):
    zone = account_zone(account)
    local = when.replace(tzinfo=dt.timezone.utc).astimezone(zone)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return dt.datetime(year, month, 1, tzinfo=zone).astimezone(dt.timezone.utc).replace(tzinfo=None)


def emails_used(account, when=None):
    """Emails counted against the monthly limit in the month containing when: the recipients of campaigns
    started that month (only what was sent, for campaigns cancelled or failed part-way) and test emails."""
    when = when or utcnow()
    start, end = month_start(account, when), next_month_start(account, when)
    counted = sa.case((Campaign.status.in_(("cancelled", "failed")), Campaign.sent_count),
                      else_=Campaign.recipient_count)
    campaigns = db.session.scalar(sa.select(sa.func.coalesce(sa.func.sum(counted), 0)).where(
        Campaign.account_id == account.id, Campaign.started_at >= start, Campaign.started_at < end)) or 0
    tests = db.session.scalar(sa.select(sa.func.coalesce(sa.func.sum(TestSend.emails), 0)).where(
        TestSend.account_id == account.id, TestSend.sent_at >= start, TestSend.sent_at < end)) or 0
    return campaigns + tests


def check_monthly_limit(account, recipients, when=None, what="This campaign"):
    """LimitExceeded when recipients more emails would go over the account's monthly email limit."""
    limit = account.monthly_email_limit
    if limit is None:
        return
    used = emails_used(account, when)
    if used + recipients > limit:
        left = max(limit - used, 0)
        field = "audience" if what == "This campaign" else "emails"
        raise LimitExceeded(
            f"{what} has {recipients:,} recipient{'s' if recipients != 1 else ''}, but your plan allows {limit:,} "
            f"emails a month and {used:,} of {limit:,} are used this month ({left:,} left). Choose fewer "
            "recipients, wait for next month, or move to a larger plan.",
            [{"field": field, "issue": f"{recipients:,} recipients; {left:,} emails left this month."}])


def test_sends_per_hour():
    return int(current_app.config.get("TEST_SENDS_PER_HOUR") or DEFAULT_TEST_SENDS_PER_HOUR)


def test_emails_in_window(account_id, now):
    return db.session.scalar(sa.select(sa.func.coalesce(sa.func.sum(TestSend.emails), 0)).where(
        TestSend.account_id == account_id, TestSend.sent_at > now - TEST_WINDOW)) or 0


def _retry_after(account_id, now, excess):
    """Seconds until enough of the window's test emails age out for `excess` more."""
    rows = db.session.execute(sa.select(TestSend.sent_at, TestSend.emails).where(
        TestSend.account_id == account_id, TestSend.sent_at > now - TEST_WINDOW).order_by(TestSend.sent_at)).all()
    freed = 0
    for sent_at, emails in rows:
        freed += emails
        if freed >= excess:
            return math.ceil((sent_at + TEST_WINDOW - now).total_seconds())
    return math.ceil(TEST_WINDOW.total_seconds())


def claim_test_sends(account, emails, now=None):
    """Record `emails` test emails about to go out, refusing them over the monthly limit (LimitExceeded) or
    over the hourly test cap (RateLimited, with the seconds to wait). The row is committed before the
    cap is counted, so parallel requests (other processes too) cannot both slip under it; the loser
    takes its row back."""
    now = now or utcnow()
    check_monthly_limit(account, emails, now, what="This test")
    cap = test_sends_per_hour()
    claim = TestSend(account_id=account.id, sent_at=now, emails=emails)
    db.session.add(claim)
    db.session.commit()
    total = test_emails_in_window(account.id, now)
    if total > cap:
        db.session.delete(claim)
        db.session.commit()
        retry = _retry_after(account.id, now, total - cap)
        minutes = max(1, math.ceil(retry / 60))
        raise RateLimited(f"You can send {cap} test emails an hour and have used them up. Try again in about "
                          f"{minutes} minute{'s' if minutes != 1 else ''}.",
                          [{"field": "emails", "issue": f"At most {cap} test emails an hour."}], retry_after=retry)
    return claim
