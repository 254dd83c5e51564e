"""One pagination helper for every API list: ?page=&per_page= in, {data, meta, links} out (spec section 1).

    @bp.get("/contacts")
    @api_route("contacts:read", summary="List contacts", response=CONTACT, paginated=True)
    def list_contacts():
        query = contacts.list_query(g.api_actor.account_id, ...)   # a sa.Select, ordered
        return paginated_response(query, contact_json)
"""
import math
from urllib.parse import urlencode

from flask import request

from nudge.blueprints.api.responses import envelope
from nudge.errors import ValidationError
from nudge.services.pagination import count_rows, fetch_page

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 100
MAX_PAGE = 1_000_000  # beyond it the row offset would not fit the databases' integers


def _positive_int(args, name, default, maximum=None):
    raw = args.get(name)
    if raw is None or raw == "":
        return default, None
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or value < 1 or (maximum is not None and value > maximum):
        limit = f" between 1 and {maximum}" if maximum else " of 1 or more"
        return None, {"field": name, "issue": f"Must be a whole number{limit}."}
    return value, None


def page_params(args=None):
    """(page, per_page) from the query string; 400 VALIDATION_ERROR when either is not valid."""
    args = request.args if args is None else args
    page, page_error = _positive_int(args, "page", 1, MAX_PAGE)
    per_page, per_page_error = _positive_int(args, "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)
    errors = [e for e in (page_error, per_page_error) if e]
    if errors:
        raise ValidationError("Invalid pagination parameters.", errors)
    return page, per_page


def last_page(total, per_page):
    return max(1, math.ceil(total / per_page))


def page_link(path, args, page):
    """path?page=N plus the request's other query arguments, relative, as in the spec's example.

    page keeps its place when the caller sent it, and comes first when they did not."""
    items, placed = [], False
    for key, values in args.lists():
        if key == "page":
            if not placed:
                items.append(("page", page))
                placed = True
            continue
        items.extend((key, value) for value in values)
    if not placed:
        items.insert(0, ("page", page))
    return f"{path}?{urlencode(items)}"


def page_meta_links(total, page, per_page, path=None, args=None):
    """The meta and links of one page of a list of total items."""
    path = request.path if path is None else path
    args = request.args if args is None else args
    last = last_page(total, per_page)
    links = {"self": page_link(path, args, page)}
    if page < last:
        links["next"] = page_link(path, args, page + 1)
    if page > 1:
        links["prev"] = page_link(path, args, min(page - 1, last))
    links["first"] = page_link(path, args, 1)
    links["last"] = page_link(path, args, last)
    return {"total": total, "page": page, "per_page": per_page}, links


def paginate(query, serialize, *, page=None, per_page=None):
    """Run one page of a SQLAlchemy select; returns the envelope body {data, meta, links}.

    The query must have a stable ORDER BY (add the primary key as a tie-breaker)."""
    if page is None or per_page is None:
        page, per_page = page_params()
    total = count_rows(query)
    rows = fetch_page(query, page, per_page)
    meta, links = page_meta_links(total, page, per_page)
    return {"data": [serialize(row) for row in rows], "meta": meta, "links": links}


def paginate_list(items, serialize=lambda item: item, *, page=None, per_page=None):
    """The same for a list already in memory (small, bounded lists only)."""
    if page is None or per_page is None:
        page, per_page = page_params()
    start = (page - 1) * per_page
    meta, links = page_meta_links(len(items), page, per_page)
    return {"data": [serialize(item) for item in items[start:start + per_page]], "meta": meta, "links": links}


def paginated_response(query, serialize, **kwargs):
    """paginate() wrapped in the envelope response."""
    body = paginate(query, serialize, **kwargs)
    return envelope(body["data"], meta=body["meta"], links=body["links"])
