"""Tags: clean-up rules shared by every way in."""
from nudge.errors import field_error

MAX_TAG_LENGTH = 100


def normalize_tags(tags, field="tags"):
    """Trimmed, inner whitespace collapsed, duplicates and empties dropped, order kept (a list or "a,b")."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = tags.split(",")
    if not isinstance(tags, (list, tuple)):
        raise field_error(field, "Must be a list of tags.")
    clean, seen = [], set()
    for tag in tags:
        if not isinstance(tag, str):
            raise field_error(field, "Each tag must be a string.")
        tag = " ".join(tag.split())
        if not tag:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            raise field_error(field, f"A tag may have at most {MAX_TAG_LENGTH} characters.")
        if tag not in seen:
            seen.add(tag)
            clean.append(tag)
    return clean
