"""GET /api/v1/openapi.json: the generated OpenAPI 3.1 document (served bare, not in the envelope)."""
from flask import jsonify

from nudge.blueprints.api import bp
from nudge.blueprints.api.openapi import document, openapi_document


@bp.get("/openapi.json")
@document(summary="This API's OpenAPI document", auth=False, hidden=True)
def openapi():
    response = jsonify(openapi_document())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
