from flask import Blueprint

bp = Blueprint("segments", __name__)
