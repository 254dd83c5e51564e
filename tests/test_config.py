"""Configuration comes from the environment; secrets are generated once, never a literal default."""
import base64
import os
import stat

import pytest

from nudge.config import load_config, normalize_database_url, parse_encryption_keys


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


def test_import_files_stay_out_of_the_public_uploads_folder(tmp_path):
    config = load_config({"NUDGE_INSTANCE_PATH": str(tmp_path)})
    assert config["IMPORT_DIR"] == str(tmp_path / "imports")
    assert not config["IMPORT_DIR"].startswith(config["UPLOAD_DIR"] + os.sep)
    # An uploads folder that would contain them (and so serve them) is refused at start.
    with pytest.raises(ValueError, match="NUDGE_UPLOAD_DIR"):
        load_config({"NUDGE_INSTANCE_PATH": str(tmp_path), "NUDGE_UPLOAD_DIR": str(tmp_path)})
