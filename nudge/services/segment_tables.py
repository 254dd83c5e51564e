"""The side tables behind segment counts: contact_tags and contact_values (migration 0008).

Triggers on contacts keep them in step with every write to contacts (docs/performance.md, "Segments").
Their stored form of a custom value depends on the field's definition, so the two things a trigger on
contacts cannot see are handled here: a definition created for values already in contacts (written around
the validation) and a definition deleted. rebuild() recomputes an account's rows from scratch, for loads
that bypass triggers (a restore with session_replication_role = replica, the segment benchmark).
"""
import sqlalchemy as sa

from nudge.extensions import db
from nudge.services.dialect import is_postgres

# The value rows of an account's contacts, by the same rules as the triggers of migration 0008 (on
# PostgreSQL through its functions nudge_value_number() and nudge_value_text()).
_VALUE_ROWS = {
    "postgresql": """
INSERT INTO contact_values (account_id, field, contact_id, number, text)
SELECT * FROM (
  SELECT c.account_id, f.name, c.id, nudge_value_number(f.type, e.value) AS number,
         nudge_value_text(f.type, e.value) AS text
  FROM contacts c
  CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(c.custom_fields) = 'object' THEN c.custom_fields
                                     ELSE '{{}}' END) AS e
  JOIN custom_fields f ON f.account_id = c.account_id AND f.name = e.key
  WHERE c.account_id = :account AND c.status <> 'deleted' {field}) AS v
WHERE v.number IS NOT NULL OR v.text IS NOT NULL
""",
    "sqlite": """
INSERT INTO contact_values (account_id, field, contact_id, number, text)
SELECT c.account_id, f.name, c.id,
       CASE WHEN f.type = 'number' THEN e.value WHEN f.type = 'boolean' THEN e.type = 'true' END,
       CASE WHEN f.type = 'text' THEN lower(e.value) WHEN f.type IN ('choice', 'date') THEN e.value END
FROM contacts c, json_each(c.custom_fields) AS e
JOIN custom_fields f ON f.account_id = c.account_id AND f.name = e.key
WHERE c.account_id = :account AND c.status <> 'deleted' {field} AND CASE f.type
  WHEN 'number' THEN e.type IN ('integer', 'real')
  WHEN 'boolean' THEN e.type IN ('true', 'false')
  WHEN 'text' THEN e.type = 'text' AND e.value <> ''
  ELSE e.type = 'text' END
""",
}
_ONE_FIELD = {"postgresql": "AND f.name = :field AND jsonb_exists(c.custom_fields, :field)",
              "sqlite": "AND f.name = :field"}

_TAG_ROWS = {
    "postgresql": """INSERT INTO contact_tags (account_id, tag, contact_id)
        SELECT DISTINCT c.account_id, t.tag, c.id FROM contacts c, unnest(c.tags) AS t(tag)
        WHERE c.account_id = :account AND c.status <> 'deleted' AND t.tag IS NOT NULL""",
    "sqlite": """INSERT OR IGNORE INTO contact_tags (account_id, tag, contact_id)
        SELECT c.account_id, t.value, c.id FROM contacts c, json_each(c.tags) AS t
        WHERE c.account_id = :account AND c.status <> 'deleted' AND t.type = 'text'""",
}


def _execute(sql, **params):
    statement = sa.text(sql).bindparams(sa.bindparam("account", type_=sa.Uuid))
    db.session.execute(statement, params)


def _dialect():
    return "postgresql" if is_postgres() else "sqlite"


def _insert_values(account_id, field=None):
    sql = _VALUE_ROWS[_dialect()].format(field=_ONE_FIELD[_dialect()] if field else "")
    _execute(sql, account=account_id, **({"field": field} if field else {}))


def sync_field(account_id, name):
    """Recompute one custom field's rows of an account from contacts (after its definition is created or
    deleted; the caller commits)."""
    _execute("DELETE FROM contact_values WHERE account_id = :account AND field = :field", account=account_id,
             field=name)
    _insert_values(account_id, name)


def rebuild(account_id):
    """Recompute every tag and value row of an account from contacts, set-based (the caller commits)."""
    _execute("DELETE FROM contact_tags WHERE account_id = :account", account=account_id)
    _execute("DELETE FROM contact_values WHERE account_id = :account", account=account_id)
    _execute(_TAG_ROWS[_dialect()], account=account_id)
    _insert_values(account_id)
