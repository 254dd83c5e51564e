"""Dashboard requests over the server's limits get a readable 413 page, not a crash."""
import io

from nudge.config import FORM_MAX_BODY_BYTES


def test_a_form_over_the_limit_is_a_readable_413(app, make_account, login):
    account, owner = make_account()
    client = app.test_client()
    login(client, owner)
    big = "x" * FORM_MAX_BODY_BYTES
    response = client.post("/segments/new", data={"name": big, "type": "dynamic", "r-kind": "group"})
    assert response.status_code == 413
    page = response.get_data(as_text=True)
    assert "Too large" in page and "larger than this server accepts" in page
    # A multipart text field over MAX_FORM_MEMORY_SIZE too; files (uploads) keep the upload limit.
    response = client.post("/segments/new", content_type="multipart/form-data",
                           data={"name": "x" * (app.config["MAX_FORM_MEMORY_SIZE"] + 1), "r-kind": "group"})
    assert response.status_code == 413
    upload = client.post("/imports/new", content_type="multipart/form-data",
                         data={"file": (io.BytesIO(b"email\n" + b"a@example.com\n" * (FORM_MAX_BODY_BYTES // 14 + 1)),
                                        "big.csv")})
    assert upload.status_code in (200, 302, 303)
    assert client.get("/segments/").status_code == 200
