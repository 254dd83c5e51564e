"""Campaigns service: who receives a campaign (never anyone who must not be mailed), drafts and their
content, the readiness checklist, the monthly limit, scheduling in the account's time zone, the status
changes and the scheduler."""
import datetime as dt

import pytest
import sqlalchemy as sa

from nudge.errors import Conflict, Forbidden, LimitExceeded, NotFound, ValidationError
from nudge.extensions import db
from nudge.models import Campaign, Message, Template
from nudge.services import campaigns, custom_fields, email_doc, segments, suppressions, templates
from tests.campaign_helpers import READY_HTML, add_contacts, fake_pipeline, ready_campaign

NOW = dt.datetime(2030, 5, 15, 12, 0)


def emails_of(account_id, audience):
    return sorted(row.email for row in db.session.execute(campaigns.audience_query(account_id, audience)))


# --------------------------------------------------------------------------------------------------
# Audience

def test_the_audience_never_includes_contacts_who_must_not_be_mailed(make_account):
    account, _ = make_account()
    other, _ = make_account()
    add_contacts(account, "ok@x.example", "also-ok@x.example")
    add_contacts(account, "unsub@x.example", status="unsubscribed")
    add_contacts(account, "bounced@x.example", status="bounced")
    add_contacts(account, "complained@x.example", status="complained")
    add_contacts(account, "deleted@x.example", deleted=True)
    add_contacts(account, "suppressed@x.example")
    suppressions.suppress(account.id, ["suppressed@x.example"], "manual")
    db.session.commit()
    add_contacts(other, "theirs@x.example")

    assert emails_of(account.id, {"all": True}) == ["also-ok@x.example", "ok@x.example"]
    assert campaigns.recipient_count(account.id, {"all": True}) == 2
    assert emails_of(other.id, {"all": True}) == ["theirs@x.example"]


def test_segments_are_included_and_excluded_and_tags_match_any(make_account):
    account, owner = make_account()
    add_contacts(account, "ann@gmail.example", first_name="Ann", tags=["vip"])
    add_contacts(account, "bob@gmail.example", tags=["beta"])
    add_contacts(account, "cy@gmail.example")            # no first name, no tags
    add_contacts(account, "dee@work.example", tags=["vip", "beta"])
    add_contacts(account, "eve@work.example", tags=["other"])
    add_contacts(account, "gone@gmail.example", status="unsubscribed", tags=["vip"])
    gmail = segments.create_segment(owner, "Gmail", "dynamic", {"match": "all", "conditions": [
        {"field": "email", "op": "ends_with", "value": "@gmail.example"}]})
    anns = segments.create_segment(owner, "Anns", "dynamic", {"match": "all", "conditions": [
        {"field": "first_name", "op": "eq", "value": "Ann"}]})
    picked = segments.create_segment(owner, "Picked", "static")
    segments.add_members(owner, picked.id, emails=["eve@work.example", "gone@gmail.example"])

    def audience(**values):
        return campaigns.validate_audience(account.id, values)

    assert emails_of(account.id, audience(segments=[str(gmail.id)])) == [
        "ann@gmail.example", "bob@gmail.example", "cy@gmail.example"]
    # Excluding a rule on a column that is NULL for most contacts keeps those contacts.
    assert emails_of(account.id, audience(segments=[str(gmail.id)], exclude_segments=[str(anns.id)])) == [
        "bob@gmail.example", "cy@gmail.example"]
    assert emails_of(account.id, audience(tags=["vip", "beta"])) == [
        "ann@gmail.example", "bob@gmail.example", "dee@work.example"]
    assert emails_of(account.id, audience(segments=[str(picked.id)], tags=["beta"])) == [
        "bob@gmail.example", "dee@work.example", "eve@work.example"]
    assert emails_of(account.id, audience(all=True, exclude_segments=[str(gmail.id)])) == [
        "dee@work.example", "eve@work.example"]
    assert campaigns.recipient_count(account.id, audience(tags=["vip", "beta"])) == 3


def test_audience_validation(make_account):
    account, owner = make_account()
    other, other_owner = make_account()
    mine = segments.create_segment(owner, "Mine", "static")
    theirs = segments.create_segment(other_owner, "Theirs", "static")

    assert campaigns.validate_audience(account.id, None) is None
    assert campaigns.validate_audience(account.id, {"tags": " vip , vip,beta"}) == {
        "segments": [], "exclude_segments": [], "tags": ["vip", "beta"]}
    with pytest.raises(ValidationError) as exc:
        campaigns.validate_audience(account.id, {"segments": [str(theirs.id)]})
    assert exc.value.details[0]["field"] == "audience.segments[0]"
    with pytest.raises(ValidationError):
        campaigns.validate_audience(account.id, {"segments": [str(mine.id)], "exclude_segments": [str(mine.id)]})
    with pytest.raises(ValidationError):
        campaigns.validate_audience(account.id, {"all": True, "tags": ["vip"]})
    with pytest.raises(ValidationError) as exc:
        campaigns.validate_audience(account.id, {"everyone": True})
    assert exc.value.details[0]["field"] == "audience.everyone"
    with pytest.raises(ValidationError):
        campaigns.validate_audience(account.id, {"segments": ["not-an-id"]})


def test_an_empty_audience_saves_but_blocks_sending(make_account, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, owner = make_account()
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account, audience={"segments": [], "tags": []})
    assert campaigns.audience_is_empty(campaign.audience)
    assert campaigns.recipient_count(account.id, campaign.audience) == 0
    codes = [item["code"] for item in campaigns.readiness(campaign) if item["blocking"]]
    assert codes == ["audience_empty"]
    with pytest.raises(ValidationError) as exc:
        campaigns.send_now(owner, campaign.id)
    assert exc.value.details[0]["field"] == "audience"
    assert pipeline.calls == []


def test_a_segment_deleted_after_saving_blocks_sending_instead_of_being_dropped(make_account, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, owner = make_account()
    add_contacts(account, "a@x.example")
    excluded = segments.create_segment(owner, "Do not mail", "static")
    campaign = ready_campaign(owner, account, audience={"all": True, "exclude_segments": [str(excluded.id)]})
    segments.delete_segment(owner, excluded.id)
    assert "segment_missing" in [item["code"] for item in campaigns.readiness(campaign)]
    with pytest.raises(ValidationError):
        campaigns.send_now(owner, campaign.id)
    with pytest.raises(ValidationError):
        campaigns.audience_query(account.id, campaign.audience)
    assert pipeline.calls == []


# --------------------------------------------------------------------------------------------------
# Drafts

def test_a_new_campaign_takes_the_accounts_default_sender(make_account):
    account, owner = make_account(name="Corner Shop")
    campaign = campaigns.create_campaign(owner, {"name": "First"})
    assert (campaign.status, campaign.from_name, campaign.from_email) == ("draft", "Corner Shop", account.email)
    own = campaigns.create_campaign(owner, {"name": "Second", "from_name": "Ann", "from_email": "Ann@Shop.EXAMPLE",
                                            "reply_to": "help@shop.example"})
    assert (own.from_name, own.from_email, own.reply_to) == ("Ann", "Ann@shop.example", "help@shop.example")


def test_invalid_details_are_refused_field_by_field(make_account):
    _, owner = make_account()
    with pytest.raises(ValidationError) as exc:
        campaigns.create_campaign(owner, {"name": "", "from_email": "not an address", "subject": "x" * 501})
    assert {d["field"] for d in exc.value.details} == {"name", "from_email", "subject"}
    with pytest.raises(ValidationError) as exc:
        campaigns.create_campaign(owner, {"name": "Tags", "subject": "Hi {{ contact.first_name "})
    assert exc.value.details[0]["field"] == "subject"
    with pytest.raises(ValidationError) as exc:
        campaigns.create_campaign(owner, {"name": "Sched", "scheduled_at": "2030-01-01T00:00"})
    assert "send" in exc.value.details[0]["issue"]
    ok = campaigns.create_campaign(owner, {"name": "Merge", "subject": "Hi {{ contact.first_name | default('you') }}"})
    assert ok.subject == "Hi {{ contact.first_name | default('you') }}"


def test_raw_html_is_compiled_and_checked(make_account):
    _, owner = make_account()
    campaign = campaigns.create_campaign(owner, {"name": "Raw", "content_html": READY_HTML})
    assert "{{ unsubscribe_url }}" in campaign.content_html
    assert "Unsubscribe" in campaign.content_text
    with pytest.raises(ValidationError) as exc:
        campaigns.create_campaign(owner, {"name": "Broken", "content_html": "<p>{{ contact.first_name </p>"})
    assert exc.value.details[0]["field"] == "content_html"


def test_only_drafts_are_editable_or_deletable(make_account, monkeypatch):
    fake_pipeline(monkeypatch)
    account, owner = make_account()
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account)
    campaigns.update_campaign(owner, campaign.id, {"subject": "New subject"})
    assert campaign.subject == "New subject"
    campaigns.send_now(owner, campaign.id)
    with pytest.raises(Conflict) as exc:
        campaigns.update_campaign(owner, campaign.id, {"subject": "Too late"})
    assert "is sending" in exc.value.message
    with pytest.raises(Conflict) as exc:
        campaigns.delete_campaign(owner, campaign.id)
    assert "cancel" in exc.value.message.lower()
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign.id).values(status="sent"))
    db.session.commit()
    with pytest.raises(Conflict) as exc:
        campaigns.delete_campaign(owner, campaign.id)
    assert "kept for its report" in exc.value.message
    draft = campaigns.create_campaign(owner, {"name": "Throwaway"})
    campaigns.delete_campaign(owner, draft.id)
    with pytest.raises(NotFound):
        campaigns.get_campaign(account.id, draft.id)


def test_content_lives_in_a_template_of_the_campaigns_own(make_account):
    account, owner = make_account()
    templates.sync_gallery()
    design = templates.list_gallery()[0]
    campaign = campaigns.create_campaign(owner, {"name": "Designed"})
    campaigns.set_content_from(owner, campaign.id, "gallery", copy_of=design.id)
    first = campaigns.campaign_template(campaign)
    assert first.category == campaigns.CAMPAIGN_CATEGORY and first.account_id == account.id
    assert campaigns.current_content(campaign).html == templates.latest_version(first.id).content_html
    assert first not in campaigns.starting_templates(account.id)

    campaigns.set_content_from(owner, campaign.id, "html")
    second = campaigns.campaign_template(campaign)
    assert second.format == "html" and second.id != first.id
    assert db.session.get(Template, first.id) is None  # the replaced campaign template is gone
    assert templates.latest_version(design.id) is not None  # the gallery design is untouched

    campaigns.delete_campaign(owner, campaign.id)
    assert db.session.get(Template, second.id) is None


def test_duplicate_makes_a_draft_with_its_own_copy_of_the_content(make_account, monkeypatch):
    fake_pipeline(monkeypatch)
    account, owner = make_account()
    add_contacts(account, "a@x.example")
    campaign = campaigns.create_campaign(owner, {"name": "Original", "subject": "Hi", "audience": {"tags": ["vip"]}})
    campaigns.set_content_from(owner, campaign.id, "html")
    copy = campaigns.duplicate_campaign(owner, campaign.id)
    assert (copy.status, copy.name, copy.subject) == ("draft", "Original (copy)", "Hi")
    assert copy.audience == campaign.audience
    assert copy.template_id != campaign.template_id
    assert campaigns.current_content(copy).html == campaigns.current_content(campaign).html


# --------------------------------------------------------------------------------------------------
# Readiness

def test_the_checklist_blocks_what_the_law_and_common_sense_require(make_account):
    account, owner = make_account()
    account.default_from_email = None
    db.session.commit()
    campaign = campaigns.create_campaign(owner, {"name": "Empty"})
    blocking = {item["code"] for item in campaigns.readiness(campaign) if item["blocking"]}
    assert blocking == {"subject_missing", "from_email_missing", "audience_empty", "content_missing",
                        "account_postal_address_missing"}

    account.postal_address = "1 Main Street"
    db.session.commit()
    no_footer = ('<html><body><p>Hello</p><img src="https://example.com/a.png">'
                 '<a href="https://example.com">Shop</a></body></html>')
    campaigns.update_campaign(owner, campaign.id, {"subject": "Hi", "from_email": "news@shop.example",
                                                   "audience": {"all": True}, "content_html": no_footer})
    items = campaigns.readiness(campaign)
    assert {i["code"] for i in items if i["blocking"]} == {"unsubscribe_missing", "postal_address_missing"}
    # Verified senders are optional on this server: an unverified From is a note, not a blocker.
    assert {i["code"] for i in items if not i["blocking"]} == {"from_email_unverified", "image_alt"}
    assert items[0]["blocking"] and not items[-1]["blocking"]  # blocking items first

    campaigns.update_campaign(owner, campaign.id, {"content_html": READY_HTML})
    assert [i for i in campaigns.readiness(campaign) if i["blocking"]] == []


# --------------------------------------------------------------------------------------------------
# Sending, scheduling and the other status changes

def test_send_now_freezes_the_content_and_hands_over_to_the_pipeline(make_account, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, owner = make_account()
    add_contacts(account, "a@x.example")
    campaign = campaigns.create_campaign(owner, {"name": "Blocks", "subject": "Hi", "audience": {"all": True}})
    account.postal_address = "1 Main Street"
    db.session.commit()
    campaigns.set_content_from(owner, campaign.id, "html")
    template = campaigns.campaign_template(campaign)

    campaigns.send_now(owner, campaign.id, now=NOW)
    assert (campaign.status, campaign.started_at, campaign.template_version) == ("sending", NOW, 1)
    assert campaign.content_html == templates.latest_version(template.id).content_html
    assert pipeline.calls == [("start_send", campaign.id)]

    # Later edits of the template do not change what the campaign sends.
    templates.save_version(owner, account.id, template.id, content_source=READY_HTML.replace("Hello", "Changed"))
    assert "Changed" not in campaigns.current_content(campaign).html
    with pytest.raises(Conflict):
        campaigns.send_now(owner, campaign.id)
    assert pipeline.names() == ["start_send"]


def test_a_pipeline_that_cannot_start_leaves_nothing_half_sent(make_account, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)

    def broken(campaign_id):
        raise ConnectionError("queue unavailable")
    monkeypatch.setattr(pipeline, "start_send", broken)
    account, owner = make_account()
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account)
    with pytest.raises(ConnectionError):
        campaigns.send_now(owner, campaign.id)
    db.session.refresh(campaign)
    assert (campaign.status, campaign.started_at) == ("draft", None)

    campaigns.schedule(owner, campaign.id, "2030-06-01T09:00", now=NOW)
    assert campaigns.start_due_campaigns(now=dt.datetime(2030, 6, 2)) == []
    db.session.refresh(campaign)
    assert (campaign.status, campaign.scheduled_at) == ("scheduled", dt.datetime(2030, 6, 1, 9, 0))


def test_scheduled_at_is_read_in_the_accounts_time_zone(make_account, monkeypatch):
    fake_pipeline(monkeypatch)
    account, owner = make_account()
    account.timezone = "Europe/Berlin"
    db.session.commit()
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account)

    campaigns.schedule(owner, campaign.id, "2030-07-15T09:00", now=NOW)     # summer: UTC+2
    assert (campaign.status, campaign.scheduled_at) == ("scheduled", dt.datetime(2030, 7, 15, 7, 0))
    campaigns.schedule(owner, campaign.id, "2031-01-15T09:00", now=NOW)     # winter: UTC+1, moved while scheduled
    assert campaign.scheduled_at == dt.datetime(2031, 1, 15, 8, 0)
    campaigns.schedule(owner, campaign.id, "2030-07-15T09:00:00-04:00", now=NOW)
    assert campaign.scheduled_at == dt.datetime(2030, 7, 15, 13, 0)
    campaigns.schedule(owner, campaign.id, "2030-07-15T09:00Z", now=NOW)
    assert campaign.scheduled_at == dt.datetime(2030, 7, 15, 9, 0)

    for bad in ("2030-05-15T13:30", "tomorrow", ""):  # 13:30 Berlin is 11:30 UTC: already past at NOW
        with pytest.raises(ValidationError) as exc:
            campaigns.schedule(owner, campaign.id, bad, now=NOW)
        assert exc.value.details[0]["field"] == "scheduled_at"


def test_status_changes_allowed_and_refused(make_account, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, owner = make_account()
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account)

    with pytest.raises(Conflict):
        campaigns.pause(owner, campaign.id)
    with pytest.raises(Conflict):
        campaigns.cancel(owner, campaign.id)
    campaigns.schedule(owner, campaign.id, "2030-06-01T09:00", now=NOW)
    campaigns.unschedule(owner, campaign.id)
    assert (campaign.status, campaign.scheduled_at) == ("draft", None)
    campaigns.schedule(owner, campaign.id, "2030-06-01T09:00", now=NOW)
    campaigns.cancel(owner, campaign.id)
    assert campaign.status == "cancelled"
    assert pipeline.calls == []  # nothing was queued for a scheduled campaign
    assert campaigns.deletable(campaign)

    second = ready_campaign(owner, account, name="Second")
    campaigns.send_now(owner, second.id)
    with pytest.raises(Conflict):
        campaigns.resume(owner, second.id)
    campaigns.pause(owner, second.id)
    assert second.status == "paused"
    with pytest.raises(Conflict):
        campaigns.pause(owner, second.id)
    campaigns.resume(owner, second.id)
    assert second.status == "sending"
    campaigns.pause(owner, second.id)
    campaigns.cancel(owner, second.id)
    assert second.status == "cancelled"
    assert pipeline.names() == ["start_send", "enqueue_workers", "cancel_queued"]
    with pytest.raises(Conflict) as exc:
        campaigns.schedule(owner, second.id, "2030-06-01T09:00", now=NOW)
    assert "duplicate" in exc.value.message.lower()
    assert not campaigns.deletable(second)


def test_test_sends_take_up_to_five_valid_addresses(make_account, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, owner = make_account()
    contact = add_contacts(account, "real@x.example")[0]
    campaign = ready_campaign(owner, account)
    results = campaigns.send_test(owner, campaign.id, "me@x.example, Boss@X.example\nme@x.example",
                                  contact_id=str(contact.id))
    assert [r["email"] for r in results] == ["me@x.example", "Boss@x.example"]
    assert pipeline.calls == [("send_test", campaign.id, ["me@x.example", "Boss@x.example"], contact.id)]
    with pytest.raises(ValidationError):
        campaigns.send_test(owner, campaign.id, [f"t{i}@x.example" for i in range(6)])
    with pytest.raises(ValidationError) as exc:
        campaigns.send_test(owner, campaign.id, ["fine@x.example", "nope"])
    assert exc.value.details[0]["field"] == "emails[1]"
    other, _ = make_account()
    stranger = add_contacts(other, "stranger@x.example")[0]
    with pytest.raises(ValidationError):
        campaigns.send_test(owner, campaign.id, ["me@x.example"], contact_id=str(stranger.id))
    assert len(pipeline.calls) == 1


# --------------------------------------------------------------------------------------------------
# The monthly limit

def test_the_monthly_limit_counts_this_months_campaigns_in_the_accounts_time_zone(make_account, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, owner = make_account()
    account.timezone = "America/New_York"
    account.monthly_email_limit = 5
    db.session.commit()
    add_contacts(account, "a@x.example", "b@x.example", "c@x.example")
    # 22:00 on 31 May in New York is already June in UTC: it counts for May, not June.
    late_may = campaigns.create_campaign(owner, {"name": "Late May"})
    may = campaigns.create_campaign(owner, {"name": "May"})
    cancelled = campaigns.create_campaign(owner, {"name": "Cancelled early"})
    db.session.execute(sa.update(Campaign).where(Campaign.id == late_may.id).values(
        status="sent", started_at=dt.datetime(2030, 6, 1, 2, 0), recipient_count=4, sent_count=4))
    db.session.execute(sa.update(Campaign).where(Campaign.id == may.id).values(
        status="sent", started_at=dt.datetime(2030, 5, 10), recipient_count=1, sent_count=1))
    db.session.execute(sa.update(Campaign).where(Campaign.id == cancelled.id).values(
        status="cancelled", started_at=dt.datetime(2030, 6, 3), recipient_count=1000, sent_count=1))
    db.session.commit()

    assert campaigns.emails_used(account, dt.datetime(2030, 5, 20)) == 5
    assert campaigns.emails_used(account, dt.datetime(2030, 6, 20)) == 1
    campaign = ready_campaign(owner, account)
    with pytest.raises(LimitExceeded) as exc:
        campaigns.send_now(owner, campaign.id, now=dt.datetime(2030, 5, 31, 12, 0))
    assert "5 of 5" in exc.value.message and "3 recipients" in exc.value.message
    with pytest.raises(LimitExceeded):
        campaigns.schedule(owner, campaign.id, "2030-05-31T20:00", now=dt.datetime(2030, 5, 31, 12, 0))
    assert campaign.status == "draft" and pipeline.calls == []
    campaigns.send_now(owner, campaign.id, now=dt.datetime(2030, 6, 20, 12, 0))  # 1 + 3 <= 5 in June
    assert campaign.status == "sending"


# --------------------------------------------------------------------------------------------------
# The scheduler

def test_due_campaigns_start_once_however_often_the_scheduler_runs(make_account, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, owner = make_account()
    add_contacts(account, "a@x.example")
    due = ready_campaign(owner, account, name="Due")
    later = ready_campaign(owner, account, name="Later")
    campaigns.schedule(owner, due.id, "2030-06-01T09:00", now=NOW)
    campaigns.schedule(owner, later.id, "2030-07-01T09:00", now=NOW)

    assert campaigns.start_due_campaigns(now=dt.datetime(2030, 5, 31)) == []
    fire = dt.datetime(2030, 6, 1, 9, 0, 30)
    assert campaigns.start_due_campaigns(now=fire) == [due.id]
    assert campaigns.start_due_campaigns(now=fire) == []
    # A second scheduler that read the same due list loses the claim.
    assert campaigns._start_scheduled(due.id, fire) is False
    assert pipeline.calls == [("start_send", due.id)]
    db.session.refresh(due)
    assert (due.status, due.started_at) == ("sending", fire)
    db.session.refresh(later)
    assert later.status == "scheduled"


def test_a_scheduled_campaign_that_can_no_longer_be_sent_fails_with_the_reason(make_account, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, owner = make_account()
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account)
    campaigns.schedule(owner, campaign.id, "2030-06-01T09:00", now=NOW)
    account.postal_address = None
    db.session.commit()
    assert campaigns.start_due_campaigns(now=dt.datetime(2030, 6, 2)) == []
    db.session.refresh(campaign)
    assert campaign.status == "failed"
    assert "postal address" in campaign.paused_reason
    assert pipeline.calls == []


def test_the_periodic_task_runs_the_scheduler(make_account, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, owner = make_account()
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account)
    campaigns.schedule(owner, campaign.id, "2030-06-01T09:00", now=NOW)
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign.id)
                       .values(scheduled_at=dt.datetime(2000, 1, 1)))
    db.session.commit()
    from nudge import tasks
    tasks.start_due_campaigns.call_local()
    assert pipeline.calls == [("start_send", campaign.id)]


# --------------------------------------------------------------------------------------------------
# Tenancy and roles

def test_other_accounts_campaigns_are_invisible_and_viewers_read_only(make_account, make_user, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, owner = make_account()
    other, intruder = make_account()
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account)
    for attempt in (lambda: campaigns.get_campaign(other.id, campaign.id),
                    lambda: campaigns.update_campaign(intruder, campaign.id, {"name": "Mine"}),
                    lambda: campaigns.send_now(intruder, campaign.id),
                    lambda: campaigns.delete_campaign(intruder, campaign.id)):
        with pytest.raises(NotFound):
            attempt()
    assert db.session.scalars(campaigns.campaigns_query(other.id)).all() == []

    viewer = make_user(account, role="viewer")
    for attempt in (lambda: campaigns.create_campaign(viewer, {"name": "No"}),
                    lambda: campaigns.send_now(viewer, campaign.id),
                    lambda: campaigns.send_test(viewer, campaign.id, ["v@x.example"])):
        with pytest.raises(Forbidden):
            attempt()
    assert campaigns.get_campaign(account.id, campaign.id).status == "draft"
    assert pipeline.calls == []



# --------------------------------------------------------------------------------------------------
# With the real pipeline

def test_send_now_through_the_pipeline_mails_exactly_the_audience(make_app, make_account, tmp_path):
    make_app(OUTBOX_DIR=str(tmp_path))
    account, owner = make_account()
    add_contacts(account, "ann@x.example", "bob@x.example", first_name="Ann")
    add_contacts(account, "unsub@x.example", status="unsubscribed")
    add_contacts(account, "blocked@x.example")
    suppressions.suppress(account.id, ["blocked@x.example"], "hard_bounce")
    db.session.commit()
    campaign = ready_campaign(owner, account)

    campaigns.send_now(owner, campaign.id)
    db.session.refresh(campaign)
    recipients = db.session.scalars(sa.select(Message.email).where(Message.campaign_id == campaign.id)
                                    .order_by(Message.email)).all()
    assert recipients == ["ann@x.example", "bob@x.example"]
    assert campaign.recipient_count == 2
    written = sorted(path.read_text(errors="replace") for path in tmp_path.rglob("*.eml"))
    assert len(written) == 2 and all("Hello Ann" in message for message in written)


# --------------------------------------------------------------------------------------------------
# Merge tags that name nothing

def _design(preheader):
    doc = email_doc.new_document()
    doc["settings"]["preheader"] = preheader
    return doc


def test_an_unknown_merge_tag_blocks_the_review_and_refuses_send_schedule_and_test(make_account, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, owner = make_account()
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account, subject="{{ contact.firstname }}, hello from us",
                              content_html=READY_HTML.replace("{{ contact.first_name", "{{ contact.last_nme"))
    items = [item for item in campaigns.readiness(campaign) if item["code"] == "merge_tag_unknown"]
    assert items == [
        {"code": "merge_tag_unknown", "blocking": True, "field": "subject",
         "message": "The subject: {{ contact.firstname }} is not a merge tag and would be blank: "
                    "did you mean contact.first_name?"},
        {"code": "merge_tag_unknown", "blocking": True, "field": "content",
         "message": "The content: {{ contact.last_nme }} is not a merge tag and would be blank: "
                    "did you mean contact.last_name?"}]
    for attempt in (lambda: campaigns.send_now(owner, campaign.id, now=NOW),
                    lambda: campaigns.schedule(owner, campaign.id, "2030-06-01T09:00", now=NOW),
                    lambda: campaigns.send_test(owner, campaign.id, ["me@x.example"])):
        with pytest.raises(ValidationError) as exc:
            attempt()
        assert [detail["field"] for detail in exc.value.details if "merge tag" in detail["issue"]] == [
            "subject", "content"]
        assert "did you mean contact.first_name?" in exc.value.message
    assert pipeline.calls == [] and db.session.get(Campaign, campaign.id).status == "draft"


def test_custom_fields_of_the_account_are_real_merge_tags(make_account, monkeypatch):
    pipeline = fake_pipeline(monkeypatch)
    account, owner = make_account()
    add_contacts(account, "a@x.example")
    campaign = ready_campaign(owner, account, subject="Your plan: {{ contact.plan }} {{ contact.custom.plan }}")
    assert [item["message"] for item in campaigns.readiness(campaign) if item["code"] == "merge_tag_unknown"] == [
        "The subject: {{ contact.plan }} is not a merge tag and would be blank: see the merge tag list in the editor.",
        "The subject: {{ contact.custom.plan }} is not a merge tag and would be blank: see the merge tag list in the "
        "editor."]
    custom_fields.create_field(owner, name="plan", type="text")
    assert not [item for item in campaigns.readiness(campaign) if item["blocking"]]
    campaigns.send_test(owner, campaign.id, ["me@x.example"])
    assert pipeline.names() == ["send_test"]


def test_the_preheader_is_checked_and_shown_for_a_sample_contact(make_account):
    account, owner = make_account()
    design = templates.create_template(owner, account.id, name="Design",
                                       content_json=_design("Hi {{ contact.first_nam }}, 20% off"))
    campaign = ready_campaign(owner, account, content_html=None, template_id=str(design.id),
                              subject="{{ contact.first_name }}, hello from {{ account.name }}")
    problems = campaigns.merge_tag_problems(campaign)
    assert [(p["field"], p["tag"], p["suggestion"]) for p in problems] == [
        ("preheader", "contact.first_nam", "contact.first_name")]  # once, though the HTML holds it too
    templates.save_version(owner, account.id, design.id, content_json=_design("Hi {{ contact.first_name }}, 20% off"))
    assert campaigns.merge_tag_problems(campaign) == []
    assert campaigns.rendered_header(campaign, account) == {
        "subject": f"Alex, hello from {account.name}", "preheader": "Hi Alex, 20% off"}
