"""segments: contact_tags and contact_values, kept in step with contacts by triggers

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 08:00:00

Segment counts on tags and custom fields read these narrow tables instead of every contact's TEXT[] and
JSON (docs/performance.md, "Segments"): one row per tag and one per custom-field value of every contact
that is not deleted, so a rule is a range of one index, read without touching a table.

* contact_tags (account_id, tag, contact_id): the primary key is the index.
* contact_values (account_id, field, contact_id, number, text): one row per defined custom field whose
  JSON value has the field's type (a value of the wrong type counts as not set, docs/segments.md).
  number holds number fields and booleans (1/0); text holds choice and date fields as stored and text
  fields lower-cased (segment text rules are case-insensitive), non-empty only. Two partial indexes,
  (account_id, field, number, contact_id) and (account_id, field, text, contact_id): every row is in
  exactly one of them, and is found by its whole key there. No primary key: inserting value rows took
  twice as long with one, and each row's key in its index is unique anyway.

Database triggers on contacts write them, so no write path can forget them (the ORM, bulk UPDATEs, the
import's COPY + INSERT ... ON CONFLICT, raw SQL): on PostgreSQL statement-level triggers with transition
tables (set-based: one INSERT ... SELECT per statement; for updates only the rows that differ), on SQLite
row triggers with json_each. Deleted contacts have no rows (a soft delete removes them, a restore puts
them back), so counts need no status test. Custom-field definitions decide the stored form: creating or
deleting a definition resynchronises that field (nudge/services/segment_tables.py).
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# ---- PostgreSQL ----------------------------------------------------------------------------------

# The stored form of one value of a field of the given type; NULL in both: no row (not set).
PG_VALUE_FUNCTIONS = (
    """CREATE FUNCTION nudge_value_number(kind text, value jsonb) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
         SELECT CASE WHEN kind = 'number' AND jsonb_typeof(value) = 'number' THEN value::numeric
                     WHEN kind = 'boolean' AND jsonb_typeof(value) = 'boolean'
                     THEN CASE WHEN value::boolean THEN 1 ELSE 0 END END $$""",
    """CREATE FUNCTION nudge_value_text(kind text, value jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
         SELECT CASE WHEN jsonb_typeof(value) <> 'string' THEN NULL
                     WHEN kind = 'text' THEN nullif(lower(value #>> '{}'), '')
                     WHEN kind IN ('choice', 'date') THEN value #>> '{}' END $$""",
)


def pg_value_rows(contacts, where="TRUE"):
    """SELECT account_id, field, contact_id, number, text: the value rows of the contacts in a relation with
    contacts' columns (aliased n). The definitions are joined once per statement."""
    return f"""SELECT * FROM (
        SELECT n.account_id, f.name AS field, n.id AS contact_id, nudge_value_number(f.type, e.value) AS number,
               nudge_value_text(f.type, e.value) AS text
        FROM {contacts} n
        CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(n.custom_fields) = 'object'
                                           THEN n.custom_fields ELSE '{{}}' END) AS e
        JOIN custom_fields f ON f.account_id = n.account_id AND f.name = e.key
        WHERE n.status <> 'deleted' AND {where}) AS v
      WHERE v.number IS NOT NULL OR v.text IS NOT NULL"""


def pg_tag_rows(contacts, where="TRUE"):
    """SELECT account_id, tag, contact_id: the tag rows of the contacts in a relation (aliased n)."""
    return f"""SELECT n.account_id, t.tag, n.id AS contact_id FROM {contacts} n, unnest(n.tags) AS t(tag)
      WHERE n.status <> 'deleted' AND t.tag IS NOT NULL AND {where}"""


def pg_delete_values(rows):
    """DELETE the value rows listed in rows, each by its whole key in its partial index."""
    return f"""
      numbers_gone AS (
        DELETE FROM contact_values x USING {rows} g
        WHERE g.number IS NOT NULL AND x.account_id = g.account_id AND x.field = g.field
          AND x.number = g.number AND x.contact_id = g.contact_id),
      texts_gone AS (
        DELETE FROM contact_values x USING {rows} g
        WHERE g.text IS NOT NULL AND x.account_id = g.account_id AND x.field = g.field
          AND x.text = g.text AND x.contact_id = g.contact_id)"""


PG_TRIGGER_FUNCTION = f"""
CREATE FUNCTION nudge_contacts_segment_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    -- New contacts have no rows yet: plain inserts (DISTINCT for a list that repeats a tag), in index
    -- order so that consecutive rows land on the same index pages.
    INSERT INTO contact_tags (account_id, tag, contact_id)
      SELECT DISTINCT * FROM ({pg_tag_rows("new_rows")}) AS t ORDER BY 1, 2, 3;
    INSERT INTO contact_values (account_id, field, contact_id, number, text)
      {pg_value_rows("new_rows")} ORDER BY 1, 2, 4, 5, 3;
  ELSIF TG_OP = 'DELETE' THEN
    WITH old_values AS ({pg_value_rows("old_rows")}),
    {pg_delete_values("old_values")}
    DELETE FROM contact_tags x USING ({pg_tag_rows("old_rows")}) AS g
      WHERE x.account_id = g.account_id AND x.tag = g.tag AND x.contact_id = g.contact_id;
  ELSE
    -- Only contacts whose tags, values, deleted-ness or account changed; of those, only rows that differ.
    WITH changed AS (
      SELECT o.id, o.account_id AS old_account, o.status AS old_status, o.tags AS old_tags,
             o.custom_fields AS old_custom, n.account_id AS new_account, n.status AS new_status,
             n.tags AS new_tags, n.custom_fields AS new_custom
      FROM old_rows o JOIN new_rows n ON n.id = o.id
      WHERE o.tags IS DISTINCT FROM n.tags OR o.custom_fields IS DISTINCT FROM n.custom_fields
         OR (o.status = 'deleted') <> (n.status = 'deleted') OR o.account_id <> n.account_id),
    old_contacts AS (
      SELECT id, old_account AS account_id, old_status AS status, old_tags AS tags, old_custom AS custom_fields
      FROM changed),
    new_contacts AS (
      SELECT id, new_account AS account_id, new_status AS status, new_tags AS tags, new_custom AS custom_fields
      FROM changed),
    old_tags AS ({pg_tag_rows("old_contacts")}),
    new_tags AS ({pg_tag_rows("new_contacts")}),
    old_values AS ({pg_value_rows("old_contacts")}),
    new_values AS ({pg_value_rows("new_contacts")}),
    tags_gone AS (
      DELETE FROM contact_tags x USING (SELECT * FROM old_tags EXCEPT SELECT * FROM new_tags) AS g
      WHERE x.account_id = g.account_id AND x.tag = g.tag AND x.contact_id = g.contact_id),
    tags_added AS (
      INSERT INTO contact_tags (account_id, tag, contact_id)
      SELECT * FROM new_tags EXCEPT SELECT * FROM old_tags
      ON CONFLICT DO NOTHING),
    values_gone AS (SELECT * FROM old_values EXCEPT SELECT * FROM new_values),
    {pg_delete_values("values_gone")}
    INSERT INTO contact_values (account_id, field, contact_id, number, text)
      SELECT * FROM new_values EXCEPT SELECT * FROM old_values;
  END IF;
  RETURN NULL;
END
$$
"""

PG_TRUNCATE_FUNCTION = """
CREATE FUNCTION nudge_contacts_segment_rows_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  TRUNCATE contact_tags, contact_values;
  RETURN NULL;
END
$$
"""

PG_TRIGGERS = {
    "contacts_segment_rows_insert": "AFTER INSERT ON contacts REFERENCING NEW TABLE AS new_rows",
    "contacts_segment_rows_update": "AFTER UPDATE ON contacts REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "contacts_segment_rows_delete": "AFTER DELETE ON contacts REFERENCING OLD TABLE AS old_rows",
}

PG_BACKFILL = (
    f"INSERT INTO contact_tags (account_id, tag, contact_id) SELECT DISTINCT * FROM ({pg_tag_rows('contacts')}) AS t",
    f"INSERT INTO contact_values (account_id, field, contact_id, number, text) {pg_value_rows('contacts')}",
)

# ---- SQLite --------------------------------------------------------------------------------------

SQLITE_NUMBER = "CASE WHEN f.type = 'number' THEN e.value WHEN f.type = 'boolean' THEN e.type = 'true' END"
SQLITE_TEXT = "CASE WHEN f.type = 'text' THEN lower(e.value) WHEN f.type IN ('choice', 'date') THEN e.value END"
SQLITE_PRESENT = """CASE f.type
      WHEN 'number' THEN e.type IN ('integer', 'real')
      WHEN 'boolean' THEN e.type IN ('true', 'false')
      WHEN 'text' THEN e.type = 'text' AND e.value <> ''
      ELSE e.type = 'text' END"""


def sqlite_values_of(row):
    """FROM/WHERE of one contact's value rows (row: NEW or OLD), as number and text expressions allow."""
    return f"""FROM json_each({row}.custom_fields) AS e
      JOIN custom_fields f ON f.account_id = {row}.account_id AND f.name = e.key
      WHERE {row}.status <> 'deleted' AND {SQLITE_PRESENT}"""


SQLITE_ADD_ROWS = f"""
  INSERT OR IGNORE INTO contact_tags (account_id, tag, contact_id)
    SELECT NEW.account_id, t.value, NEW.id FROM json_each(NEW.tags) AS t
    WHERE NEW.status <> 'deleted' AND t.type = 'text';
  INSERT INTO contact_values (account_id, field, contact_id, number, text)
    SELECT NEW.account_id, f.name, NEW.id, {SQLITE_NUMBER}, {SQLITE_TEXT} {sqlite_values_of("NEW")};"""

SQLITE_REMOVE_ROWS = f"""
  DELETE FROM contact_tags WHERE account_id = OLD.account_id AND contact_id = OLD.id
    AND tag IN (SELECT value FROM json_each(OLD.tags));
  DELETE FROM contact_values WHERE account_id = OLD.account_id AND contact_id = OLD.id AND number IS NOT NULL
    AND (field, number) IN (SELECT f.name, {SQLITE_NUMBER} {sqlite_values_of("OLD")});
  DELETE FROM contact_values WHERE account_id = OLD.account_id AND contact_id = OLD.id AND text IS NOT NULL
    AND (field, text) IN (SELECT f.name, {SQLITE_TEXT} {sqlite_values_of("OLD")});"""

SQLITE_TRIGGERS = {
    "contacts_segment_rows_insert": "AFTER INSERT ON contacts BEGIN" + SQLITE_ADD_ROWS,
    "contacts_segment_rows_update": (
        "AFTER UPDATE ON contacts WHEN OLD.tags IS NOT NEW.tags OR OLD.custom_fields IS NOT NEW.custom_fields "
        "OR (OLD.status = 'deleted') IS NOT (NEW.status = 'deleted') OR OLD.account_id IS NOT NEW.account_id "
        "OR OLD.id IS NOT NEW.id BEGIN" + SQLITE_REMOVE_ROWS + SQLITE_ADD_ROWS),
    "contacts_segment_rows_delete": "AFTER DELETE ON contacts BEGIN" + SQLITE_REMOVE_ROWS,
}

SQLITE_BACKFILL = (
    """INSERT OR IGNORE INTO contact_tags (account_id, tag, contact_id)
       SELECT c.account_id, t.value, c.id FROM contacts c, json_each(c.tags) AS t
       WHERE c.status <> 'deleted' AND t.type = 'text'""",
    f"""INSERT INTO contact_values (account_id, field, contact_id, number, text)
       SELECT c.account_id, f.name, c.id, {SQLITE_NUMBER}, {SQLITE_TEXT}
       FROM contacts c, json_each(c.custom_fields) AS e
       JOIN custom_fields f ON f.account_id = c.account_id AND f.name = e.key
       WHERE c.status <> 'deleted' AND {SQLITE_PRESENT}""",
)

# ---- Both ----------------------------------------------------------------------------------------

INDEXES = {
    'ix_contact_values_number': (['account_id', 'field', 'number', 'contact_id'], 'number IS NOT NULL'),
    'ix_contact_values_text': (['account_id', 'field', 'text', 'contact_id'], 'text IS NOT NULL'),
}


def create_tables(sqlite):
    # SQLite: contact_tags is clustered by its key (WITHOUT ROWID); PostgreSQL builds the key after the
    # backfill (like a restore: about twice as fast on a large list).
    tags_key = [sa.PrimaryKeyConstraint('account_id', 'tag', 'contact_id', name='pk_contact_tags')] if sqlite else []
    op.create_table('contact_tags',
                    sa.Column('account_id', sa.Uuid(), nullable=False),
                    sa.Column('tag', sa.Text(), nullable=False),
                    sa.Column('contact_id', sa.Uuid(), nullable=False),
                    *tags_key, **({'sqlite_with_rowid': False} if sqlite else {}))
    op.create_table('contact_values',
                    sa.Column('account_id', sa.Uuid(), nullable=False),
                    sa.Column('field', sa.String(length=50), nullable=False),
                    sa.Column('contact_id', sa.Uuid(), nullable=False),
                    sa.Column('number', sa.Numeric(), nullable=True),
                    sa.Column('text', sa.Text(), nullable=True))


def create_indexes(dialect):
    for name, (columns, where) in INDEXES.items():
        op.create_index(name, 'contact_values', columns, unique=False, **{f'{dialect}_where': sa.text(where)})


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgresql()
    else:
        _upgrade_sqlite()


def _upgrade_postgresql():
    # No write may slip between the backfill and the triggers: writers wait (readers go on) until the
    # migration commits.
    op.execute("LOCK TABLE contacts IN SHARE ROW EXCLUSIVE MODE")
    create_tables(sqlite=False)
    for statement in PG_VALUE_FUNCTIONS:
        op.execute(statement)
    op.execute("SET LOCAL maintenance_work_mem = '256MB'")
    for statement in PG_BACKFILL:
        op.execute(statement)
    op.create_primary_key('pk_contact_tags', 'contact_tags', ['account_id', 'tag', 'contact_id'])
    create_indexes('postgresql')
    op.execute(PG_TRIGGER_FUNCTION)
    op.execute(PG_TRUNCATE_FUNCTION)
    for name, timing in PG_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {timing} FOR EACH STATEMENT EXECUTE FUNCTION nudge_contacts_segment_rows()")
    op.execute("CREATE TRIGGER contacts_segment_rows_truncate AFTER TRUNCATE ON contacts "
               "FOR EACH STATEMENT EXECUTE FUNCTION nudge_contacts_segment_rows_truncate()")
    # Statistics now, not at the next auto-analyze: the planner sizes tag and value ranges from them.
    op.execute("ANALYZE contact_tags")
    op.execute("ANALYZE contact_values")


def _upgrade_sqlite():
    create_tables(sqlite=True)
    for statement in SQLITE_BACKFILL:
        op.execute(statement)
    create_indexes('sqlite')
    for name, body in SQLITE_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}\nEND")


def downgrade():
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("DROP TRIGGER contacts_segment_rows_truncate ON contacts")
        for name in PG_TRIGGERS:
            op.execute(f"DROP TRIGGER {name} ON contacts")
        op.execute("DROP FUNCTION nudge_contacts_segment_rows_truncate()")
        op.execute("DROP FUNCTION nudge_contacts_segment_rows()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table('contact_values')
    op.drop_table('contact_tags')
    if postgresql:
        op.execute("DROP FUNCTION nudge_value_text(text, jsonb)")
        op.execute("DROP FUNCTION nudge_value_number(text, jsonb)")
