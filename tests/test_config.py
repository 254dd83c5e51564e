"""Configuration comes from the environment; secrets are generated once, never a literal default."""
import base64
import os
import stat

import pytest

from nudge.config import load_config, normalize_database_url, parse_encryption_keys, parse_tracking_keys


def test_secrets_are_generated_once_into_the_instance_folder(tmp_path):
    first = load_config({"NUDGE_INSTANCE_PATH": str(tmp_path)})
    second = load_config({"NUDGE_INSTANCE_PATH": str(tmp_path)})
    assert first["SECRET_KEY"] == second["SECRET_KEY"] and len(first["SECRET_KEY"]) >= 40
    assert first["ENCRYPTION_KEYS"] == second["ENCRYPTION_KEYS"] and len(first["ENCRYPTION_KEYS"][0]) == 32
    for name in ("secret_key", "encryption_keys"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    other = load_config({"NUDGE_INSTANCE_PATH": str(tmp_path / "other")})
    assert other["SECRET_KEY"] != first["SECRET_KEY"]


def test_environment_overrides_and_defaults(tmp_path):
    key = base64.urlsafe_b64encode(b"k" * 32).decode()
    config = load_config({
        "NUDGE_INSTANCE_PATH": str(tmp_path), "NUDGE_SECRET_KEY": "from-env", "NUDGE_ENCRYPTION_KEYS": key,
        "NUDGE_DATABASE_URL": "postgresql://u@db/nudge", "NUDGE_REDIS_URL": "redis://r:6379/1",
        "NUDGE_BASE_URL": "https://mail.example.com/", "NUDGE_REQUIRE_MFA": "0"})
    assert config["SECRET_KEY"] == "from-env"
    assert config["ENCRYPTION_KEYS"] == [b"k" * 32]
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://u@db/nudge"
    assert config["RATELIMIT_STORAGE_URI"] == "redis://r:6379/1"
    assert config["BASE_URL"] == "https://mail.example.com"
    assert config["SESSION_COOKIE_SECURE"] is True
    assert config["REQUIRE_MFA"] is False
    assert not (tmp_path / "secret_key").exists()

    defaults = load_config({"NUDGE_INSTANCE_PATH": str(tmp_path)})
    assert defaults["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/nudge.db"
    assert defaults["REDIS_URL"] is None and defaults["RATELIMIT_STORAGE_URI"] == "memory://"
    assert defaults["REQUIRE_MFA"] is True


def test_bad_encryption_keys_are_refused():
    with pytest.raises(ValueError):
        parse_encryption_keys(base64.urlsafe_b64encode(b"short").decode())
    with pytest.raises(ValueError):
        parse_encryption_keys(" , ")


def test_tracking_keys_are_read_first_signing_and_unset_by_default(tmp_path):
    config = load_config({"NUDGE_INSTANCE_PATH": str(tmp_path),
                          "NUDGE_TRACKING_KEYS": " new-tracking-secret-0123 , old-secret-key ,"})
    assert config["TRACKING_KEYS"] == ["new-tracking-secret-0123", "old-secret-key"]
    assert load_config({"NUDGE_INSTANCE_PATH": str(tmp_path)})["TRACKING_KEYS"] is None  # derived from the secret key
    assert parse_tracking_keys("  ") is None


@pytest.mark.parametrize("raw", [" , ", "short,a-long-enough-old-secret-key"])
def test_bad_tracking_keys_are_refused(raw):
    with pytest.raises(ValueError, match="NUDGE_TRACKING_KEYS"):
        parse_tracking_keys(raw)


def test_postgres_urls_use_psycopg2():
    assert normalize_database_url("postgres://a@b/c") == "postgresql+psycopg2://a@b/c"
    assert normalize_database_url("postgresql+psycopg2://a@b/c") == "postgresql+psycopg2://a@b/c"
    assert normalize_database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_encryption_round_trip_and_rotation(make_app):
    from nudge.services.security import decrypt, encrypt
    old, new = b"o" * 32, b"n" * 32
    app = make_app(ENCRYPTION_KEYS=[old])
    sealed = encrypt("JBSWY3DPEHPK3PXP")
    assert "JBSWY3DPEHPK3PXP" not in sealed
    app.config["ENCRYPTION_KEYS"] = [new, old]  # rotated: a new key first, the old one still decrypts
    assert decrypt(sealed) == "JBSWY3DPEHPK3PXP"
    assert decrypt(encrypt("x")) == "x"
    app.config["ENCRYPTION_KEYS"] = [new]
    with pytest.raises(ValueError):
        decrypt(sealed)


def test_sign_up_and_session_settings_from_the_environment(tmp_path):
    from nudge.config import AUTH_RATE_LIMITS
    from nudge.services.system_mail import sender
    defaults = load_config({"NUDGE_INSTANCE_PATH": str(tmp_path)})
    assert defaults["SIGNUP"] == "first" and defaults["SESSION_MAX_HOURS"] == 12
    assert defaults["AUTH_RATE_LIMITS"] == AUTH_RATE_LIMITS
    assert sender(defaults) == ("no-reply@localhost", "NudgeCampaign")
    config = load_config({"NUDGE_INSTANCE_PATH": str(tmp_path), "NUDGE_SIGNUP": "Open", "NUDGE_SESSION_MAX_HOURS": "8",
                          "NUDGE_MAIL_FROM": "Mail Robot <robot@mail.example.com>"})
    assert config["SIGNUP"] == "open" and config["SESSION_MAX_HOURS"] == 8
    assert sender(config) == ("robot@mail.example.com", "Mail Robot")
    with pytest.raises(ValueError):
        load_config({"NUDGE_INSTANCE_PATH": str(tmp_path), "NUDGE_SIGNUP": "everyone"})


def test_ses_sns_topics_are_an_allow_list_of_topic_arns(tmp_path):
    base = {"NUDGE_INSTANCE_PATH": str(tmp_path)}
    assert load_config(base)["SES_SNS_TOPICS"] == frozenset()
    config = load_config({**base, "NUDGE_SES_SNS_TOPICS": " arn:aws:sns:eu-west-1:123456789012:ses-feedback , "
                                                          "arn:aws-cn:sns:cn-north-1:123456789012:bounces.fifo,"})
    assert config["SES_SNS_TOPICS"] == {"arn:aws:sns:eu-west-1:123456789012:ses-feedback",
                                        "arn:aws-cn:sns:cn-north-1:123456789012:bounces.fifo"}
    with pytest.raises(ValueError, match="NUDGE_SES_SNS_TOPICS"):
        load_config({**base, "NUDGE_SES_SNS_TOPICS": "ses-feedback"})


def test_account_smtp_relays_are_restricted_unless_configured(tmp_path):
    base = {"NUDGE_INSTANCE_PATH": str(tmp_path)}
    defaults = load_config(base)
    assert defaults["ACCOUNT_SMTP_ALLOW_PRIVATE"] is False
    assert defaults["ACCOUNT_SMTP_PORTS"] == (25, 465, 587, 2525)
    config = load_config({**base, "NUDGE_ACCOUNT_SMTP_ALLOW_PRIVATE": "1", "NUDGE_ACCOUNT_SMTP_PORTS": "587, 1025"})
    assert config["ACCOUNT_SMTP_ALLOW_PRIVATE"] is True and config["ACCOUNT_SMTP_PORTS"] == (587, 1025)
    with pytest.raises(ValueError, match="NUDGE_ACCOUNT_SMTP_PORTS"):
        load_config({**base, "NUDGE_ACCOUNT_SMTP_PORTS": "smtp"})


def test_import_files_stay_out_of_the_public_uploads_folder(tmp_path):
    config = load_config({"NUDGE_INSTANCE_PATH": str(tmp_path)})
    assert config["IMPORT_DIR"] == str(tmp_path / "imports")
    assert not config["IMPORT_DIR"].startswith(config["UPLOAD_DIR"] + os.sep)
    # An uploads folder that would contain them (and so serve them) is refused at start.
    with pytest.raises(ValueError, match="NUDGE_UPLOAD_DIR"):
        load_config({"NUDGE_INSTANCE_PATH": str(tmp_path), "NUDGE_UPLOAD_DIR": str(tmp_path)})
