from flask import Blueprint

bp = Blueprint("api_docs", __name__)
