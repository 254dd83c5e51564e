"""one contact per address: identity is lower(email)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 19:30:00

An address in another case (Ann@Example.com, ann@example.com) is the same contact and the same
suppression entry. The address stays as first typed (display, API); identity is its lower-cased form:
unique indexes on (account_id, lower(email)) replace the plain unique constraints on contacts and
suppressions (the import's ON CONFLICT target and every suppression check use the expression).

Existing duplicates are merged first, set-based (one statement per step, whatever the table's size):

* The oldest contact of each group (created_at, then id) is kept, with its spelling of the address.
* Its fields: names it lacks come from the next oldest duplicate that has them; custom fields merge (the
  oldest contact's value of a field wins); tags are the union (the keeper's first, in order);
  subscription_date is the earliest.
* Its status: the most restrictive of the group (complained > bounced > unsubscribed > active; a deleted
  duplicate counts with the status it had), so a duplicate that unsubscribed, bounced or complained keeps
  the merged contact from being mailed. It is deleted only when every duplicate was deleted.
* Dependants move to it: email events, messages (a campaign that mailed two spellings keeps both messages
  for its report; the later one loses its contact link, as when a contact is deleted: the unique
  (campaign, contact) allows one), static segment memberships, automation instances (one per automation;
  the oldest contact's). Tag and custom-value rows follow through the contacts triggers (migration 0008).
  A table added later with a contact_id foreign key is moved as well; if that breaks one of its unique
  constraints, its rows get what the foreign key's ON DELETE says.
* The duplicates are deleted. Suppression entries of one address merge into the oldest (its reason).

Each merge is logged (alembic.runtime.migration): per account the number of contacts merged, then each
kept id with the ids merged into it.

The downgrade puts the plain unique constraints back (the merge is not undone).
"""
import logging
import re
import uuid

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

STATUS_RANK = "CASE {0} WHEN 'complained' THEN 4 WHEN 'bounced' THEN 3 WHEN 'unsubscribed' THEN 2 ELSE 1 END"
RANK_STATUS = "CASE {0} WHEN 4 THEN 'complained' WHEN 3 THEN 'bounced' WHEN 2 THEN 'unsubscribed' ELSE 'active' END"

# Every contact of a group of addresses equal but for case: its keeper (the oldest) and its place (1 = keeper).
GROUPS = """
CREATE TEMP TABLE contact_merge AS
SELECT id, account_id, keep_id, seq FROM (
  SELECT c.id, c.account_id, first_value(c.id) OVER w AS keep_id, row_number() OVER w AS seq
  FROM contacts c
  JOIN (SELECT account_id, lower(email) AS identity FROM contacts
        GROUP BY account_id, lower(email) HAVING count(*) > 1) d
    ON d.account_id = c.account_id AND lower(c.email) = d.identity
  WINDOW w AS (PARTITION BY c.account_id, lower(c.email) ORDER BY c.created_at, c.id)) AS grouped
"""

# Per keeper: whether any member is not deleted, the most restrictive (effective) status, and dates.
RESULTS = f"""
CREATE TEMP TABLE contact_merge_result AS
SELECT m.keep_id,
       max(CASE WHEN c.status <> 'deleted' THEN 1 ELSE 0 END) AS live,
       max(CASE WHEN c.status = 'deleted' THEN {STATUS_RANK.format("coalesce(c.status_before_delete, 'active')")}
                ELSE {STATUS_RANK.format("c.status")} END) AS status_rank,
       max(c.deleted_at) AS deleted_at,
       min(c.unsubscribed_at) AS unsubscribed_at,
       min(c.subscription_date) AS subscription_date
FROM contact_merge m JOIN contacts c ON c.id = m.id
GROUP BY m.keep_id
"""


def _first_of_group(column):
    """The column's value from the oldest member of the keeper's group that has one."""
    return f"""(SELECT c.{column} FROM contact_merge m JOIN contacts c ON c.id = m.id
                WHERE m.keep_id = contacts.id AND c.{column} IS NOT NULL ORDER BY m.seq LIMIT 1)"""


def _result(expression):
    return f"(SELECT {expression} FROM contact_merge_result r WHERE r.keep_id = contacts.id)"


PG_TAGS = """nullif(ARRAY(
    SELECT t FROM (SELECT u.t, min(m.seq * 1000000 + u.n) AS o
                   FROM contact_merge m JOIN contacts c ON c.id = m.id, unnest(c.tags) WITH ORDINALITY AS u(t, n)
                   WHERE m.keep_id = contacts.id AND u.t IS NOT NULL GROUP BY u.t) AS x ORDER BY o), '{}')"""

SQLITE_TAGS = """nullif((
    SELECT json_group_array(t) FROM (
      SELECT j.value AS t, min(m.seq * 1000000 + j.key) AS o
      FROM contact_merge m JOIN contacts c ON c.id = m.id, json_each(c.tags) AS j
      WHERE m.keep_id = contacts.id AND j.type = 'text' GROUP BY j.value ORDER BY o)), '[]')"""

PG_CUSTOM = """(SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb) FROM (
    SELECT DISTINCT ON (e.key) e.key, e.value
    FROM contact_merge m JOIN contacts c ON c.id = m.id,
         jsonb_each(CASE WHEN jsonb_typeof(c.custom_fields) = 'object' THEN c.custom_fields ELSE '{}' END) AS e
    WHERE m.keep_id = contacts.id ORDER BY e.key, m.seq) AS x)"""

# json_each gives true/false as 1/0 and objects as text: json() keeps them JSON. The bare columns come from
# the row of min(seq) (SQLite's documented behaviour of min/max aggregates).
SQLITE_CUSTOM = """(SELECT json_group_object(key, CASE type WHEN 'true' THEN json('true') WHEN 'false' THEN json('false')
                                                    WHEN 'null' THEN json('null') WHEN 'object' THEN json(value)
                                                    WHEN 'array' THEN json(value) ELSE value END)
    FROM (SELECT e.key, e.value, e.type, min(m.seq)
          FROM contact_merge m JOIN contacts c ON c.id = m.id, json_each(c.custom_fields) AS e
          WHERE m.keep_id = contacts.id GROUP BY e.key))"""


def _merge_keepers(bind, sqlite):
    live = _result("r.live")
    rank = _result("r.status_rank")
    status = f"CASE WHEN {live} = 1 THEN {RANK_STATUS.format(rank)} ELSE 'deleted' END"
    bind.execute(sa.text(f"""
        UPDATE contacts SET
          first_name = {_first_of_group("first_name")},
          last_name = {_first_of_group("last_name")},
          tags = {SQLITE_TAGS if sqlite else PG_TAGS},
          custom_fields = {SQLITE_CUSTOM if sqlite else PG_CUSTOM},
          subscription_date = {_result("r.subscription_date")},
          status = {status},
          status_before_delete = CASE WHEN {live} = 1 THEN NULL ELSE {RANK_STATUS.format(rank)} END,
          deleted_at = CASE WHEN {live} = 1 THEN NULL ELSE {_result("r.deleted_at")} END,
          unsubscribed_at = CASE WHEN {rank} > 1 THEN coalesce(unsubscribed_at, {_result("r.unsubscribed_at")})
                                 END,
          updated_at = CURRENT_TIMESTAMP
        WHERE id IN (SELECT keep_id FROM contact_merge)"""))


DUPLICATES = "SELECT id FROM contact_merge WHERE seq > 1"

# A dependant row of a later member whose keeper-side twin (same campaign/automation, earlier member) exists.
LATER_TWIN = """EXISTS (SELECT 1 FROM {table} y JOIN contact_merge n ON n.id = y.contact_id
                        WHERE y.{key} = x.{key} AND n.keep_id = m.keep_id AND n.seq < m.seq)"""


def _move_dependants(bind):
    moved = {"email_events", "messages", "segment_members", "automation_instances"}
    bind.execute(sa.text("UPDATE email_events AS x SET contact_id = m.keep_id FROM contact_merge m "
                         "WHERE x.contact_id = m.id AND m.seq > 1"))
    # One message per (campaign, contact): a later spelling's message stays in the report, unlinked.
    bind.execute(sa.text(f"""UPDATE messages AS x SET contact_id = NULL FROM contact_merge m
                             WHERE x.contact_id = m.id AND m.seq > 1
                               AND {LATER_TWIN.format(table="messages", key="campaign_id")}"""))
    bind.execute(sa.text("UPDATE messages AS x SET contact_id = m.keep_id FROM contact_merge m "
                         "WHERE x.contact_id = m.id AND m.seq > 1"))
    bind.execute(sa.text("""
        INSERT INTO segment_members (segment_id, contact_id, account_id, added_at)
        SELECT s.segment_id, m.keep_id, m.account_id, min(s.added_at)
        FROM segment_members s JOIN contact_merge m ON m.id = s.contact_id
        WHERE m.seq > 1 AND NOT EXISTS (SELECT 1 FROM segment_members k
                                        WHERE k.segment_id = s.segment_id AND k.contact_id = m.keep_id)
        GROUP BY s.segment_id, m.keep_id, m.account_id"""))
    bind.execute(sa.text(f"DELETE FROM segment_members WHERE contact_id IN ({DUPLICATES})"))
    bind.execute(sa.text(f"""DELETE FROM automation_instances WHERE id IN (
                               SELECT x.id FROM automation_instances x JOIN contact_merge m ON m.id = x.contact_id
                               WHERE m.seq > 1 AND {LATER_TWIN.format(table="automation_instances",
                                                                      key="automation_id")})"""))
    bind.execute(sa.text("UPDATE automation_instances AS x SET contact_id = m.keep_id FROM contact_merge m "
                         "WHERE x.contact_id = m.id AND m.seq > 1"))
    for table, column, ondelete in _other_references(bind, moved):
        _move_other(bind, table, column, ondelete)


def _other_references(bind, known):
    """(table, column, ondelete) of foreign keys to contacts.id in tables this migration does not know."""
    inspector = sa.inspect(bind)
    for table in inspector.get_table_names():
        if table in known or table == "contacts":
            continue
        for fk in inspector.get_foreign_keys(table):
            if fk["referred_table"] == "contacts" and fk["referred_columns"] == ["id"]:
                yield table, fk["constrained_columns"][0], (fk.get("options") or {}).get("ondelete")


def _move_other(bind, table, column, ondelete):
    try:
        with bind.begin_nested():
            bind.execute(sa.text(f"UPDATE {table} AS x SET {column} = m.keep_id FROM contact_merge m "
                                 f"WHERE x.{column} = m.id AND m.seq > 1"))
    except sa.exc.IntegrityError:
        action = "SET NULL" if (ondelete or "").upper() == "SET NULL" else "CASCADE"
        log.warning("0016: %s.%s rows of merged contacts could not move (a unique constraint); %s", table, column,
                    "unlinked" if action == "SET NULL" else "deleted")
        if action == "SET NULL":
            bind.execute(sa.text(f"UPDATE {table} SET {column} = NULL WHERE {column} IN ({DUPLICATES})"))
        else:
            bind.execute(sa.text(f"DELETE FROM {table} WHERE {column} IN ({DUPLICATES})"))


def _uuid(value):
    return str(uuid.UUID(str(value)))  # SQLite stores 32 hex digits


def _report(bind):
    rows = bind.execute(sa.text("SELECT account_id, keep_id, id FROM contact_merge WHERE seq > 1 "
                                "ORDER BY account_id, keep_id, seq")).all()
    by_account = {}
    for account_id, keep_id, merged_id in rows:
        by_account.setdefault(_uuid(account_id), {}).setdefault(_uuid(keep_id), []).append(_uuid(merged_id))
    for account_id, groups in by_account.items():
        log.warning("0016: account %s: %d contacts merged into %d (same address in another case)",
                    account_id, sum(len(ids) for ids in groups.values()), len(groups))
        for keep_id, merged in groups.items():
            log.info("0016: account %s: kept contact %s, merged %s", account_id, keep_id, ", ".join(merged))
    return len(rows)


def merge_duplicate_contacts(bind, sqlite):
    """Merge contacts whose addresses differ only in case; returns how many were merged away."""
    bind.execute(sa.text(GROUPS))
    try:
        merged = _report(bind)
        if merged:
            bind.execute(sa.text("CREATE INDEX contact_merge_id ON contact_merge (id)"))
            bind.execute(sa.text("CREATE INDEX contact_merge_keep ON contact_merge (keep_id)"))
            bind.execute(sa.text(RESULTS))
            bind.execute(sa.text("CREATE INDEX contact_merge_result_keep ON contact_merge_result (keep_id)"))
            if not sqlite:
                # Autovacuum never analyses temporary tables: without statistics every per-keeper lookup below
                # was planned as a scan of the whole merge table (17 s for 5,000 keepers instead of < 1 s).
                bind.execute(sa.text("ANALYZE contact_merge, contact_merge_result"))
            _merge_keepers(bind, sqlite)
            _move_dependants(bind)
            bind.execute(sa.text(f"DELETE FROM contacts WHERE id IN ({DUPLICATES})"))
            bind.execute(sa.text("DROP TABLE contact_merge_result"))
    finally:
        bind.execute(sa.text("DROP TABLE contact_merge"))
    return merged


def merge_duplicate_suppressions(bind):
    """One entry per address: the oldest (with its reason) stays."""
    result = bind.execute(sa.text("""
        DELETE FROM suppressions WHERE id IN (
          SELECT id FROM (
            SELECT s.id, row_number() OVER (PARTITION BY s.account_id, lower(s.email)
                                            ORDER BY s.created_at, s.id) AS seq
            FROM suppressions s
            JOIN (SELECT account_id, lower(email) AS identity FROM suppressions
                  GROUP BY account_id, lower(email) HAVING count(*) > 1) d
              ON d.account_id = s.account_id AND lower(s.email) = d.identity) AS grouped
          WHERE seq > 1)"""))
    if result.rowcount:
        log.warning("0016: %d suppression entries merged (same address in another case)", result.rowcount)
    return result.rowcount


# ---- SQLite: a table constraint goes only by rebuilding the table ----------------------------------

def _sqlite_rebuild(bind, table, change_sql):
    """Rebuild a table with change_sql(CREATE TABLE text) applied, keeping its rows, indexes and triggers
    (SQLite's documented 12-step procedure; this app's SQLite connections do not enforce foreign keys)."""
    create = bind.execute(sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"),
                          {"t": table}).scalar_one()
    others = bind.execute(sa.text("SELECT sql FROM sqlite_master WHERE tbl_name = :t AND type IN ('index', 'trigger') "
                                  "AND sql IS NOT NULL ORDER BY type = 'trigger'"), {"t": table}).scalars().all()
    changed = change_sql(create)
    new_name = f"{table}__0016"
    bind.execute(sa.text(re.sub(rf"^CREATE TABLE \"?{table}\"?", f"CREATE TABLE {new_name}", changed)))
    bind.execute(sa.text(f"INSERT INTO {new_name} SELECT * FROM {table}"))
    bind.execute(sa.text(f"DROP TABLE {table}"))
    bind.execute(sa.text(f"ALTER TABLE {new_name} RENAME TO {table}"))
    for statement in others:
        bind.execute(sa.text(statement))


def _without_constraint(name):
    def change(sql):
        changed, count = re.subn(rf",\s*CONSTRAINT {name} UNIQUE \(account_id, email\)", "", sql)
        if count != 1:
            raise RuntimeError(f"0016: constraint {name} not found in {sql!r}")
        return changed
    return change


def _with_constraint(name):
    def change(sql):
        head, tail = sql.rstrip().rsplit(")", 1)
        return f"{head.rstrip()}, \n\tCONSTRAINT {name} UNIQUE (account_id, email)\n){tail}"
    return change


def _drop_plain_unique(bind, sqlite, table, name):
    if sqlite:
        _sqlite_rebuild(bind, table, _without_constraint(name))
    else:
        op.drop_constraint(name, table, type_="unique")


def upgrade():
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    if not sqlite:
        # No write may add a duplicate between the merge and the unique indexes (readers go on).
        op.execute("LOCK TABLE contacts, suppressions IN SHARE ROW EXCLUSIVE MODE")
    merge_duplicate_contacts(bind, sqlite)
    merge_duplicate_suppressions(bind)
    op.drop_index('ix_contacts_account_lower_email', table_name='contacts')
    _drop_plain_unique(bind, sqlite, 'contacts', 'uq_contacts_account_id_email')
    _drop_plain_unique(bind, sqlite, 'suppressions', 'uq_suppressions_account_id_email')
    op.create_index('uq_contacts_account_lower_email', 'contacts', ['account_id', sa.text('lower(email)')],
                    unique=True)
    op.create_index('uq_suppressions_account_lower_email', 'suppressions', ['account_id', sa.text('lower(email)')],
                    unique=True)


def downgrade():
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    op.drop_index('uq_suppressions_account_lower_email', table_name='suppressions')
    op.drop_index('uq_contacts_account_lower_email', table_name='contacts')
    for table, name in (('contacts', 'uq_contacts_account_id_email'),
                        ('suppressions', 'uq_suppressions_account_id_email')):
        if sqlite:
            _sqlite_rebuild(bind, table, _with_constraint(name))
        else:
            op.create_unique_constraint(name, table, ['account_id', 'email'])
    op.create_index('ix_contacts_account_lower_email', 'contacts', ['account_id', sa.text('lower(email)')],
                    unique=False)
