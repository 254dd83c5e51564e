"""Images uploaded for emails: checked (real PNG/JPEG/GIF/WebP, size), stored per account under
NUDGE_UPLOAD_DIR and served publicly under unguessable names, since recipients' mail clients load them."""
import io
import os
import re
import secrets

import sqlalchemy as sa
from flask import current_app
from PIL import Image, UnidentifiedImageError

from nudge.errors import NotFound, field_error
from nudge.extensions import db
from nudge.models import Upload, User
from nudge.services import permissions

# Pillow format -> (extension, content type). SVG is refused: it can carry script.
FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"), "GIF": ("gif", "image/gif"),
           "WEBP": ("webp", "image/webp")}
STORED_NAME = re.compile(r"^[A-Za-z0-9_-]{16,40}\.(png|jpg|gif|webp)$")
MAX_PIXELS = 40_000_000


def upload_dir(account_id):
    return os.path.join(current_app.config["UPLOAD_DIR"], str(account_id))


def public_url(upload):
    base = current_app.config["UPLOAD_URL"] or current_app.config["BASE_URL"] + "/uploads"
    return f"{base}/{upload.account_id}/{upload.stored_name}"


def _read_limited(stream, limit):
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise field_error("file", f"The image is larger than {limit // (1024 * 1024)} MB.")
    if not data:
        raise field_error("file", "Choose an image file to upload.")
    return data


def _inspect(data):
    """(format, width, height) of an image, or a ValidationError saying what is wrong."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format, (width, height) = image.format, image.size
            if width * height > MAX_PIXELS:
                raise field_error("file", "The image has too many pixels (40 megapixels at most).")
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError):
        raise field_error("file", "This file is not an image we can use: upload a PNG, JPEG, GIF or WebP.")
    if image_format not in FORMATS:
        raise field_error("file", "Upload a PNG, JPEG, GIF or WebP image.")
    return image_format, width, height


def save_upload(actor, account_id, stream, filename):
    """Check and store an uploaded image; returns the Upload row."""
    permissions.require(actor, "campaigns:write")
    data = _read_limited(stream, current_app.config["UPLOAD_MAX_BYTES"])
    image_format, width, height = _inspect(data)
    extension, content_type = FORMATS[image_format]
    stored_name = f"{secrets.token_urlsafe(18)}.{extension}"
    folder = upload_dir(account_id)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, stored_name), "xb") as out:
        out.write(data)
    name = os.path.basename((filename or "image").replace("\\", "/"))[:255] or "image"
    upload = Upload(account_id=account_id, filename=name, stored_name=stored_name, content_type=content_type,
                    size=len(data), width=width, height=height,
                    created_by=actor.id if isinstance(actor, User) else None)
    db.session.add(upload)
    db.session.commit()
    return upload


def list_uploads(account_id, limit=60):
    return db.session.scalars(sa.select(Upload).where(Upload.account_id == account_id)
                              .order_by(Upload.created_at.desc(), Upload.id).limit(limit)).all()


def delete_upload(actor, account_id, upload_id):
    """Remove an image (emails already sent that show it will show a broken image)."""
    permissions.require(actor, "campaigns:write")
    upload = db.session.scalar(sa.select(Upload).where(Upload.id == upload_id, Upload.account_id == account_id))
    if upload is None:
        raise NotFound("No such image.")
    path = os.path.join(upload_dir(account_id), upload.stored_name)
    db.session.delete(upload)
    db.session.commit()
    if os.path.exists(path):
        os.remove(path)


def stored_file(account_id, stored_name):
    """(folder, name, content type) of a stored image to serve, or NotFound."""
    if not STORED_NAME.match(stored_name or ""):
        raise NotFound("No such image.")
    upload = db.session.scalar(sa.select(Upload).where(Upload.account_id == account_id,
                                                       Upload.stored_name == stored_name))
    if upload is None:
        raise NotFound("No such image.")
    return upload_dir(account_id), upload.stored_name, upload.content_type
