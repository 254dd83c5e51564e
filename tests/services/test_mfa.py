"""TOTP enrolment and checks, recovery codes, turning MFA off and owner resets."""
import base64
import datetime as dt
import re
import time

import pyotp
import pytest
import sqlalchemy as sa

from nudge.errors import Forbidden, NotFound, ValidationError
from nudge.extensions import db
from nudge.models import AuditLog, UsedTotpCode, User
from nudge.models.types import utcnow
from nudge.services import mfa
from nudge.services.security import hash_token

CODE_FORMAT = re.compile(r"^[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}$")


def audit(action):
    return db.session.scalars(sa.select(AuditLog).where(AuditLog.action == action)).all()


def wrong_code(secret):
    """A six-digit code that is not valid for this secret right now."""
    totp = pyotp.TOTP(secret)
    valid = {totp.at(time.time() + drift) for drift in (-30, 0, 30)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in valid)


def enrolled(make_account):
    """An owner who turned MFA on through the service; returns (owner, secret, recovery codes)."""
    _, owner = make_account(mfa=False)
    secret = mfa.begin_enrolment()
    codes = mfa.confirm_enrolment(owner, secret, pyotp.TOTP(secret).now(), ip="192.0.2.7")
    return db.session.get(User, owner.id), secret, codes


def test_enrolment_needs_a_valid_code_and_stores_nothing_until_then(make_account):
    _, owner = make_account(mfa=False)
    secret = mfa.begin_enrolment()
    assert len(base64.b32decode(secret)) >= 20  # 160-bit secret
    with pytest.raises(ValidationError) as exc:
        mfa.confirm_enrolment(owner, secret, wrong_code(secret))
    assert exc.value.details[0]["field"] == "code"
    db.session.rollback()
    user = db.session.get(User, owner.id)
    assert not user.mfa_enabled and user.totp_secret_encrypted is None and user.recovery_codes == []


def test_confirm_enrolment_turns_mfa_on_with_ten_hashed_recovery_codes(make_account):
    owner, secret, codes = enrolled(make_account)
    assert owner.mfa_enabled
    assert secret not in owner.totp_secret_encrypted  # stored encrypted
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(CODE_FORMAT.match(code) for code in codes)
    assert owner.recovery_codes == [hash_token(code) for code in codes]
    assert mfa.verify_totp(owner, pyotp.TOTP(secret).now())
    [entry] = audit("mfa.enabled")
    assert entry.user_id == owner.id and entry.ip_address == "192.0.2.7"


def test_verify_totp_accepts_one_step_of_drift_and_rejects_garbage(make_account):
    owner, secret, _ = enrolled(make_account)
    totp = pyotp.TOTP(secret)
    assert mfa.verify_totp(owner, totp.at(time.time() - 30))
    assert mfa.verify_totp(owner, totp.at(time.time() + 30))
    assert not mfa.verify_totp(owner, totp.at(time.time() - 120))
    assert not mfa.verify_totp(owner, "12345")
    assert not mfa.verify_totp(owner, "abcdef")
    code = totp.now()
    assert mfa.verify_totp(owner, code[:3] + " " + code[3:])


def test_a_totp_code_cannot_be_used_twice_when_replay_protection_is_on(make_app, make_account):
    make_app(MFA_REJECT_REUSED_CODES=True)
    owner, secret, _ = enrolled(make_account)
    code = pyotp.TOTP(secret).at(time.time() + 30)  # the enrolment used the current step
    assert mfa.verify_totp(owner, code)
    assert not mfa.verify_totp(owner, code)


def test_without_redis_used_codes_are_remembered_in_the_database_for_every_process(make_app, make_account):
    """Two apps stand for two processes, each with its own in-memory rate-limit store: a code used through
    one is refused by the other, because the database remembers it."""
    make_app(MFA_REJECT_REUSED_CODES=True, RATELIMIT_STORAGE_URI="memory://")
    owner, secret, _ = enrolled(make_account)
    step = pyotp.TOTP(secret).timecode(time.time()) + 1
    code = pyotp.TOTP(secret).generate_otp(step)
    assert mfa.verify_totp(owner, code)
    assert db.session.get(UsedTotpCode, (owner.id, step)) is not None
    make_app(MFA_REJECT_REUSED_CODES=True, RATELIMIT_STORAGE_URI="memory://")  # "another process"
    assert not mfa.verify_totp(db.session.get(User, owner.id), code)


def test_used_codes_are_forgotten_once_they_cannot_be_valid_again(make_app, make_account):
    make_app(MFA_REJECT_REUSED_CODES=True, RATELIMIT_STORAGE_URI="memory://")
    owner, secret, _ = enrolled(make_account)
    old = utcnow() - dt.timedelta(seconds=mfa.USED_CODE_SECONDS + 1)
    db.session.add(UsedTotpCode(user_id=owner.id, step=1, used_at=old))
    db.session.commit()
    assert mfa.purge_used_codes(utcnow()) == 1
    db.session.add(UsedTotpCode(user_id=owner.id, step=2, used_at=old))
    db.session.commit()
    assert mfa.verify_totp(owner, pyotp.TOTP(secret).at(time.time() + 30))  # a new use sweeps the user's old ones
    steps = db.session.scalars(sa.select(UsedTotpCode.step).where(UsedTotpCode.user_id == owner.id)).all()
    assert 2 not in steps and len(steps) == 2  # the enrolment's step and this one


def test_recovery_codes_work_once_and_forgive_case_and_spaces(make_account):
    owner, _, codes = enrolled(make_account)
    typed = codes[0].upper().replace("-", " ")
    assert mfa.use_recovery_code(owner, typed)
    assert not mfa.use_recovery_code(owner, codes[0])
    assert mfa.recovery_codes_left(db.session.get(User, owner.id)) == 9
    assert not mfa.use_recovery_code(owner, "aaaa-bbbb-cccc-dddd")
    assert not mfa.use_recovery_code(owner, "not a code")
    [entry] = audit("mfa.recovery_code_used")
    assert entry.meta == {"remaining": 9} and entry.user_id == owner.id


def test_regenerating_recovery_codes_needs_a_code_and_retires_the_old_ones(make_account):
    owner, secret, old = enrolled(make_account)
    with pytest.raises(ValidationError):
        mfa.regenerate_recovery_codes(owner, wrong_code(secret))
    db.session.rollback()
    new = mfa.regenerate_recovery_codes(owner, pyotp.TOTP(secret).now(), ip="192.0.2.8")
    assert len(new) == 10 and not set(new) & set(old)
    assert not mfa.use_recovery_code(owner, old[1])
    assert mfa.use_recovery_code(owner, new[1])
    assert len(audit("mfa.recovery_codes_regenerated")) == 1


def test_mfa_cannot_be_turned_off_when_required(make_account):
    owner, secret, _ = enrolled(make_account)
    with pytest.raises(Forbidden):
        mfa.disable_mfa(owner, pyotp.TOTP(secret).now())
    assert db.session.get(User, owner.id).mfa_enabled


def test_turning_mfa_off_needs_a_code_and_ends_other_sessions(make_app, make_account):
    make_app(REQUIRE_MFA=False)
    owner, secret, _ = enrolled(make_account)
    version = owner.session_version
    with pytest.raises(ValidationError):
        mfa.disable_mfa(owner, wrong_code(secret))
    db.session.rollback()
    mfa.disable_mfa(owner, pyotp.TOTP(secret).now())
    user = db.session.get(User, owner.id)
    assert not user.mfa_enabled and user.totp_secret_encrypted is None and user.recovery_codes == []
    assert user.session_version == version + 1
    assert len(audit("mfa.disabled")) == 1


def test_an_owner_can_reset_a_members_mfa(make_account, make_user):
    account, owner = make_account()
    member = make_user(account, role="marketer")
    version = member.session_version
    mfa.reset_mfa(owner, str(member.id), ip="192.0.2.9")
    member = db.session.get(User, member.id)
    assert not member.mfa_enabled and member.recovery_codes == []
    assert member.session_version == version + 1
    [entry] = audit("mfa.reset")
    assert entry.user_id == owner.id and entry.resources == [f"user:{member.id}"]
    assert entry.account_id == account.id


@pytest.mark.parametrize("role", ["admin", "marketer", "viewer"])
def test_only_owners_can_reset_mfa(make_account, make_user, role):
    account, _ = make_account()
    actor = make_user(account, role=role)
    member = make_user(account, role="viewer")
    with pytest.raises(Forbidden):
        mfa.reset_mfa(actor, member.id)
    assert db.session.get(User, member.id).mfa_enabled
    assert audit("mfa.reset") == []


def test_reset_mfa_stays_inside_the_owners_account(make_account, make_user):
    _, owner = make_account()
    other_account, _ = make_account()
    stranger = make_user(other_account)
    with pytest.raises(NotFound):
        mfa.reset_mfa(owner, stranger.id)
    with pytest.raises(NotFound):
        mfa.reset_mfa(owner, "not-a-uuid")
    assert db.session.get(User, stranger.id).mfa_enabled


def test_recovery_code_shape_carries_80_bits():
    assert len(mfa.RECOVERY_ALPHABET) == 32 and len(set(mfa.RECOVERY_ALPHABET)) == 32
    codes = mfa.new_recovery_codes()
    assert all(CODE_FORMAT.match(code) for code in codes)
    assert mfa.normalize_recovery_code(" " + codes[0].upper() + " ") == codes[0]
    # Look-alike letters a user might type are read as the digits they resemble.
    assert mfa.normalize_recovery_code("oooo-iiii-llll-0000") == "0000-1111-1111-0000"


def test_qr_code_svg_is_safe_for_the_csp():
    uri = mfa.provisioning_uri(mfa.begin_enrolment(), "ann@shop.example")
    assert uri.startswith("otpauth://totp/NudgeCampaign:ann%40shop.example?") and "issuer=NudgeCampaign" in uri
    svg = mfa.qr_svg(uri)
    assert svg.startswith("<svg") and "<script" not in svg and "style=" not in svg
    assert mfa.format_key("ABCDEFGHIJKL") == "ABCD EFGH IJKL"
