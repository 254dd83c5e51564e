"""The contacts service: filters on both dialects, create/update rules, soft delete, tags, history, purge."""
import datetime as dt

import pytest
import sqlalchemy as sa

from nudge.errors import Conflict, Forbidden, NotFound, ValidationError
from nudge.extensions import db
from nudge.models import Contact, EmailEvent, Suppression
from nudge.models.types import utcnow
from nudge.services import contacts, custom_fields, suppressions
from nudge.services.housekeeping import run_housekeeping
from nudge.services.pagination import count_rows


def emails(account_id, filters=None):
    query = contacts.contacts_query(account_id, filters or {})
    return [c.email for c in db.session.scalars(query).all()]


def parsed(account_id, **args):
    from werkzeug.datastructures import MultiDict
    multi = MultiDict()
    for key, value in args.items():
        for v in value if isinstance(value, list) else [value]:
            multi.add(key.replace("__", "."), v)
    return emails(account_id, contacts.parse_filters(multi, account_id))


def events_of(contact_id, event_type=None):
    query = sa.select(EmailEvent).where(EmailEvent.contact_id == contact_id)
    if event_type:
        query = query.where(EmailEvent.event_type == event_type)
    return db.session.scalars(query).all()


@pytest.fixture
def owner(make_account):
    return make_account()[1]


@pytest.fixture
def people(owner):
    """A hand-built list covering NULL tags, case, names and custom fields."""
    custom_fields.create_field(owner, name="plan", type="choice", options=["free", "pro"])
    custom_fields.create_field(owner, name="seats", type="number")
    custom_fields.create_field(owner, name="vip", type="boolean")
    custom_fields.create_field(owner, name="renews", type="date")
    rows = [
        {"email": "Ann@Example.com", "first_name": "Ann", "last_name": "Lee", "tags": ["customer", "vip"],
         "custom_fields": {"plan": "pro", "seats": 5, "vip": True, "renews": "2025-03-01"}},
        {"email": "bob@example.com", "first_name": "Bob", "last_name": "Stone", "tags": ["customer"],
         "custom_fields": {"plan": "free", "seats": "1"}},
        {"email": "carol@example.org", "first_name": "Carol", "tags": None, "custom_fields": {"vip": False}},
        {"email": "dan_x@example.org", "last_name": "Lee"},
    ]
    made = {}
    for row in rows:
        contact = contacts.create_contact(owner, row, source="test")
        made[contact.email.split("@")[0].lower()] = contact
    return made


def test_create_normalises_and_emits_subscribed(owner):
    contact = contacts.create_contact(owner, {"email": "  Zoe@EXAMPLE.COM ", "tags": " a , b ,a"}, source="api")
    assert contact.email == "Zoe@example.com"
    assert contact.status == "active" and contact.tags == ["a", "b"] and contact.source == "api"
    assert contact.subscription_date is not None
    assert [e.event_type for e in events_of(contact.id)] == ["contact.subscribed"]


def test_create_rejects_bad_input_with_every_problem(owner):
    custom_fields.create_field(owner, name="seats", type="number")
    with pytest.raises(ValidationError) as exc:
        contacts.create_contact(owner, {"email": "not-an-email", "custom_fields": {"seats": "many", "nope": 1},
                                        "status": "deleted"})
    fields = {d["field"] for d in exc.value.details}
    assert fields == {"email", "status", "custom_fields.seats", "custom_fields.nope"}


def test_duplicates_conflict(owner):
    contacts.create_contact(owner, {"email": "ann@example.com"})
    with pytest.raises(Conflict):
        contacts.create_contact(owner, {"email": "ann@EXAMPLE.com"})


def test_creating_a_deleted_address_revives_the_contact(owner):
    first = contacts.create_contact(owner, {"email": "ann@example.com", "first_name": "Ann", "tags": ["old"],
                                            "custom_fields": {}})
    contacts.delete_contact(owner, first.id)
    again = contacts.create_contact(owner, {"email": "ann@example.com", "last_name": "Lee", "tags": ["new"]},
                                    source="form")
    assert again.id == first.id
    assert again.status == "active" and again.deleted_at is None
    assert (again.first_name, again.last_name, again.tags, again.source) == ("Ann", "Lee", ["new"], "form")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 1


def test_suppressed_address_is_never_active(owner):
    suppressions.suppress(owner.account_id, ["gone@example.com"], "complaint")
    db.session.commit()
    contact = contacts.create_contact(owner, {"email": "gone@example.com"})
    assert contact.status == "unsubscribed"
    assert not events_of(contact.id, "contact.subscribed")
    with pytest.raises(ValidationError) as exc:
        contacts.update_contact(owner, contact.id, {"status": "active"})
    assert "suppression list" in exc.value.message
    assert exc.value.details[0]["field"] == "status"
    # Removing the suppression does not re-activate, but allows it deliberately.
    suppressions.remove_suppressions(owner, ["gone@example.com"])
    assert contacts.get_contact(owner.account_id, contact.id).status == "unsubscribed"
    assert contacts.update_contact(owner, contact.id, {"status": "active"}).status == "active"


def test_unsubscribing_suppresses_and_records(owner):
    contact = contacts.create_contact(owner, {"email": "ann@example.com"})
    contacts.update_contact(owner, contact.id, {"status": "unsubscribed"})
    assert contact.status == "unsubscribed" and contact.unsubscribed_at is not None
    row = db.session.scalar(sa.select(Suppression).where(Suppression.email == "ann@example.com"))
    assert row.reason == "unsubscribed" and row.account_id == owner.account_id
    assert len(events_of(contact.id, "contact.unsubscribed")) == 1
    other = contacts.create_contact(owner, {"email": "bob@example.com"})
    contacts.unsubscribe_contact(owner, other.id)
    assert suppressions.is_suppressed(owner.account_id, "bob@example.com")


def test_update_merges_custom_fields_and_tracks_tags(owner):
    custom_fields.create_field(owner, name="company")
    custom_fields.create_field(owner, name="seats", type="number")
    contact = contacts.create_contact(owner, {"email": "a@example.com", "tags": ["x"],
                                              "custom_fields": {"company": "Acme", "seats": 3}})
    contacts.update_contact(owner, contact.id, {"custom_fields": {"seats": None, "company": "Acme Ltd"},
                                                "tags": ["y"], "first_name": "A"})
    assert contact.custom_fields == {"company": "Acme Ltd"}
    contacts.update_contact(owner, contact.id, {"custom_fields": {"seats": "7"}})
    assert contact.custom_fields == {"company": "Acme Ltd", "seats": 7}
    assert contact.first_name == "A" and contact.tags == ["y"]
    assert events_of(contact.id, "contact.tag_added")[0].event_data == {"tags": ["y"]}
    assert events_of(contact.id, "contact.tag_removed")[0].event_data == {"tags": ["x"]}
    with pytest.raises(ValidationError) as exc:
        contacts.update_contact(owner, contact.id, {"custom_fields": {"seats": "lots"}})
    assert exc.value.details[0]["field"] == "custom_fields.seats"


def test_changing_email_to_a_taken_address_conflicts(owner):
    contacts.create_contact(owner, {"email": "a@example.com"})
    b = contacts.create_contact(owner, {"email": "b@example.com"})
    with pytest.raises(Conflict):
        contacts.update_contact(owner, b.id, {"email": "a@example.com"})


def test_filters(owner, people):
    account_id = owner.account_id
    assert set(emails(account_id)) == {"Ann@example.com", "bob@example.com", "carol@example.org", "dan_x@example.org"}
    # email: exact, case-insensitive
    assert parsed(account_id, email="ann@EXAMPLE.com") == ["Ann@example.com"]
    # q: email or names, case-insensitive; LIKE wildcards are literal
    assert set(parsed(account_id, q="lee")) == {"Ann@example.com", "dan_x@example.org"}
    assert parsed(account_id, q="ANN LEE") == ["Ann@example.com"]
    assert parsed(account_id, q="n_x") == ["dan_x@example.org"]
    assert parsed(account_id, q="%") == []
    # tags: all of them; NULL tags never match
    assert set(parsed(account_id, tag="customer")) == {"Ann@example.com", "bob@example.com"}
    assert parsed(account_id, tag=["customer", "vip"]) == ["Ann@example.com"]
    assert parsed(account_id, tag="nobody") == []
    # custom fields, typed; an empty value means "not set"
    assert parsed(account_id, field__plan="pro") == ["Ann@example.com"]
    assert parsed(account_id, field__seats="1") == ["bob@example.com"]
    assert parsed(account_id, field__vip="false") == ["carol@example.org"]
    assert parsed(account_id, field__vip="yes") == ["Ann@example.com"]
    assert parsed(account_id, field__renews="2025-03-01") == ["Ann@example.com"]
    assert set(parsed(account_id, field__plan="")) == {"carol@example.org", "dan_x@example.org"}
    with pytest.raises(ValidationError) as exc:
        contacts.parse_filters({"field.nope": "x", "field.seats": "many"}, account_id)
    assert {d["field"] for d in exc.value.details} == {"field.nope", "field.seats"}
    # status
    contacts.unsubscribe_contact(owner, people["bob"].id)
    assert parsed(account_id, status="unsubscribed") == ["bob@example.com"]
    assert set(parsed(account_id, status="active,unsubscribed")) == set(emails(account_id))
    with pytest.raises(ValidationError):
        contacts.parse_filters({"status": "gone"}, account_id)
    # sort
    assert parsed(account_id, sort="email") == ["Ann@example.com", "bob@example.com", "carol@example.org",
                                                "dan_x@example.org"]
    assert parsed(account_id, sort="-email")[0] == "dan_x@example.org"
    assert parsed(account_id, sort="last_name")[-1] == "carol@example.org"  # no name goes last
    with pytest.raises(ValidationError):
        contacts.parse_filters({"sort": "password"}, account_id)


def test_created_filters_and_time_zones(owner):
    a = contacts.create_contact(owner, {"email": "a@example.com"})
    b = contacts.create_contact(owner, {"email": "b@example.com"})
    a.created_at = dt.datetime(2025, 1, 1, 23, 30)
    b.created_at = dt.datetime(2025, 1, 2, 12, 0)
    db.session.commit()
    account_id = owner.account_id
    assert parsed(account_id, created_after="2025-01-02") == ["b@example.com"]
    assert parsed(account_id, created_before="2025-01-02") == ["a@example.com"]
    # 2025-01-02T01:00+02:00 is 2025-01-01T23:00Z
    assert parsed(account_id, created_after="2025-01-02T01:00:00+02:00", sort="email") == ["a@example.com",
                                                                                            "b@example.com"]
    assert parsed(account_id, created_after="2025-01-01T23:45:00Z") == ["b@example.com"]
    with pytest.raises(ValidationError) as exc:
        contacts.parse_filters({"created_after": "yesterday"}, account_id)
    assert exc.value.details[0]["field"] == "created_after"


def test_bulk_tags_by_ids_and_by_filter(owner, people):
    account_id = owner.account_id
    changed = contacts.add_tags(owner, ["new"], contact_ids=[people["ann"].id, people["carol"].id])
    assert changed == 2
    assert contacts.add_tags(owner, ["new"], contact_ids=[people["ann"].id]) == 0  # already had it
    db.session.expire_all()
    assert people["carol"].tags == ["new"]  # from NULL
    assert sorted(people["ann"].tags) == ["customer", "new", "vip"]
    assert len(events_of(people["carol"].id, "contact.tag_added")) == 1
    changed = contacts.remove_tags(owner, ["customer"], filters={"tags": ["customer"]})
    assert changed == 2
    db.session.expire_all()
    assert people["bob"].tags == [] and sorted(people["ann"].tags) == ["new", "vip"]
    assert people["dan_x"].tags is None  # untouched
    assert len(events_of(people["bob"].id, "contact.tag_removed")) == 1
    assert contacts.remove_tags(owner, ["customer"], filters={}) == 0
    # by filter: everyone matching q
    assert contacts.add_tags(owner, "lees", filters=contacts.parse_filters({"q": "lee"}, account_id)) == 2
    assert set(parsed(account_id, tag="lees")) == {"Ann@example.com", "dan_x@example.org"}


def test_soft_delete_hides_everywhere_and_restores(owner, people):
    account_id = owner.account_id
    ann = people["ann"]
    contacts.delete_contact(owner, ann.id)
    assert "Ann@example.com" not in emails(account_id)
    assert "Ann@example.com" not in parsed(account_id, tag="vip")
    with pytest.raises(NotFound):
        contacts.get_contact(account_id, ann.id)
    assert parsed(account_id, status="deleted") == ["Ann@example.com"]
    assert contacts.add_tags(owner, ["x"], contact_ids=[ann.id]) == 0
    with pytest.raises(NotFound):
        contacts.update_contact(owner, ann.id, {"first_name": "X"})
    restored = contacts.restore_contact(owner, ann.id)
    assert restored.status == "active" and restored.deleted_at is None
    assert "Ann@example.com" in emails(account_id)


def test_restore_keeps_the_old_status_and_respects_suppression(owner, people):
    bob = people["bob"]
    contacts.unsubscribe_contact(owner, bob.id)
    contacts.delete_contact(owner, bob.id)
    assert contacts.restore_contact(owner, bob.id).status == "unsubscribed"
    ann = people["ann"]
    contacts.delete_contact(owner, ann.id)
    suppressions.add_suppressions(owner, ["Ann@example.com"])
    assert contacts.restore_contact(owner, ann.id).status == "unsubscribed"


def test_restore_window_and_purge(owner, people):
    ann, bob = people["ann"], people["bob"]
    ann_id = ann.id
    contacts.delete_contact(owner, ann.id)
    contacts.delete_contact(owner, bob.id)
    ann.deleted_at = utcnow() - dt.timedelta(days=31)
    db.session.commit()
    with pytest.raises(NotFound):
        contacts.restore_contact(owner, ann.id)
    summary = run_housekeeping()
    assert summary["contacts"] == 1
    db.session.expire_all()
    remaining = db.session.scalars(sa.select(Contact.email)).all()
    assert "Ann@example.com" not in remaining and "bob@example.com" in remaining
    assert events_of(ann_id) == []


def test_bulk_delete_and_undo(owner, people):
    account_id = owner.account_id
    count, deleted_at = contacts.delete_contacts(owner, filters={"tags": ["customer"]})
    assert count == 2
    assert set(emails(account_id)) == {"carol@example.org", "dan_x@example.org"}
    assert contacts.restore_contacts(owner, deleted_at=deleted_at) == 2
    assert len(emails(account_id)) == 4


def test_history_newest_first(owner):
    contact = contacts.create_contact(owner, {"email": "a@example.com"})
    contacts.add_tags(owner, ["one"], contact_ids=[contact.id])
    contacts.unsubscribe_contact(owner, contact.id)
    rows = db.session.scalars(contacts.contact_history(owner.account_id, contact.id)).all()
    order = ["contact.subscribed", "contact.tag_added", "contact.unsubscribed"]
    for row in rows:
        row.created_at = dt.datetime(2025, 1, 1) + dt.timedelta(minutes=order.index(row.event_type))
    db.session.commit()
    rows = db.session.scalars(contacts.contact_history(owner.account_id, contact.id)).all()
    assert [r.event_type for r in rows] == ["contact.unsubscribed", "contact.tag_added", "contact.subscribed"]


def test_tenant_isolation(make_account, owner, people):
    other_account, other_owner = make_account()
    mine = contacts.create_contact(other_owner, {"email": "ann@example.com"})  # same address, other account
    assert emails(other_account.id) == ["ann@example.com"]
    assert count_rows(contacts.contacts_query(other_account.id, {})) == 1
    assert contacts.status_counts(other_account.id) == {"active": 1}
    with pytest.raises(NotFound):
        contacts.get_contact(other_account.id, people["ann"].id)
    with pytest.raises(NotFound):
        contacts.update_contact(other_owner, people["ann"].id, {"first_name": "X"})
    with pytest.raises(NotFound):
        contacts.contact_history(other_account.id, people["ann"].id)
    assert contacts.add_tags(other_owner, ["x"], contact_ids=[people["ann"].id, mine.id]) == 1
    assert contacts.delete_contacts(other_owner, filters={})[0] == 1
    assert len(emails(owner.account_id)) == 4


def test_viewers_cannot_write(make_user, owner, people):
    from nudge.models import Account
    viewer = make_user(db.session.get(Account, owner.account_id), role="viewer")
    assert len(emails(viewer.account_id)) == 4
    for call in (lambda: contacts.create_contact(viewer, {"email": "v@example.com"}),
                 lambda: contacts.update_contact(viewer, people["ann"].id, {"first_name": "V"}),
                 lambda: contacts.delete_contact(viewer, people["ann"].id),
                 lambda: contacts.add_tags(viewer, ["x"], filters={}),
                 lambda: suppressions.add_suppressions(viewer, ["a@example.com"])):
        with pytest.raises(Forbidden):
            call()


def test_serialize_contact(owner, people):
    data = contacts.serialize_contact(people["carol"])
    assert data["tags"] == [] and data["custom_fields"] == {"vip": False}
    assert set(data) >= {"id", "email", "first_name", "last_name", "status", "tags", "custom_fields",
                         "subscription_date", "created_at", "updated_at", "source"}
    assert data["created_at"].endswith("Z")


def test_segment_filter(owner, people, make_account):
    from nudge.services import segments
    vips = segments.create_segment(owner, "VIPs", conditions={
        "match": "all", "conditions": [{"field": "tags", "op": "contains_any", "value": ["vip"]}]})
    account_id = owner.account_id
    assert parsed(account_id, segment_id=str(vips.id)) == ["Ann@example.com"]
    assert parsed(account_id, segment_id=str(vips.id), q="bob") == []
    _, other = make_account()
    with pytest.raises(NotFound):
        emails(other.account_id, {"segment_id": vips.id})
    # bulk actions by a segment filter
    assert contacts.add_tags(owner, ["segment-tag"], filters={"segment_id": vips.id}) == 1


def test_history_loads_each_events_campaign_in_the_same_query(owner):
    """The activity names the campaign: contact_history() loads it with the events (no query per row);
    events of no campaign have none; the count of the paginated select is unchanged."""
    from nudge.services import tracking
    from tests.campaign_helpers import sent_message
    ann = contacts.create_contact(owner, {"email": "ann@example.com"}, source="test")
    campaign, message = sent_message(owner.account, ann)
    tracking.record_click(message.id, "https://shop.example/spring")
    db.session.expire_all()
    query = contacts.contact_history(owner.account_id, ann.id)
    assert count_rows(query) == len(db.session.scalars(query).unique().all())
    events = {e.event_type: e for e in db.session.scalars(query).unique()}
    # lazy="raise": reading a campaign that was not loaded with the events would raise here.
    assert events["email.clicked"].campaign.name == "Spring" and events["email.clicked"].campaign.id == campaign.id
    assert events["contact.subscribed"].campaign is None
