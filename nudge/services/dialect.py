"""The few queries that differ between PostgreSQL and SQLite, behind one function each.

PostgreSQL stores tags as TEXT[] and documents as JSONB; SQLite stores both as JSON text."""
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from nudge.extensions import db


def is_postgres():
    return db.engine.dialect.name == "postgresql"


def new_uuid_sql():
    """A SQL expression that makes a fresh UUID in the column's stored form (set-based inserts)."""
    if is_postgres():
        return sa.func.gen_random_uuid()
    return sa.func.lower(sa.func.hex(sa.func.randomblob(16)))  # sa.Uuid on SQLite: 32 hex digits


def insert(table):
    """The dialect's INSERT, which has on_conflict_do_nothing/do_update."""
    return (postgresql.insert if is_postgres() else sqlite.insert)(table)


def json_array(values):
    """A bind parameter holding a list, as the tags column expects it."""
    if is_postgres():
        return sa.cast(sa.literal(list(values), postgresql.ARRAY(sa.Text)), postgresql.ARRAY(sa.Text))
    return sa.func.json(sa.literal(_json_dumps(list(values))))


def _json_dumps(value):
    import json
    return json.dumps(value, ensure_ascii=False)


def tags_contain_any(column, tags):
    """Rows whose tags include at least one of tags."""
    tags = list(tags)
    if is_postgres():
        return sa.func.coalesce(column, sa.text("'{}'::text[]")).op("&&")(sa.cast(sa.literal(tags, postgresql.ARRAY(sa.Text)), postgresql.ARRAY(sa.Text)))
    each = sa.func.json_each(column).table_valued("value")
    return sa.exists(sa.select(1).select_from(each).where(each.c.value.in_(tags)))


def tags_contain_all(column, tags):
    """Rows whose tags include every one of tags."""
    tags = list(tags)
    if is_postgres():
        return sa.func.coalesce(column, sa.text("'{}'::text[]")).op("@>")(sa.cast(sa.literal(tags, postgresql.ARRAY(sa.Text)), postgresql.ARRAY(sa.Text)))
    return sa.and_(*(tags_contain_any(column, [tag]) for tag in tags)) if tags else sa.true()


def tags_with(column, tags):
    """The tags column with tags added (sorted, without duplicates), for UPDATE ... SET tags = ..."""
    tags = list(tags)
    if is_postgres():
        merged = sa.func.array_cat(sa.func.coalesce(column, sa.text("'{}'::text[]")),
                                   sa.cast(sa.literal(tags, postgresql.ARRAY(sa.Text)), postgresql.ARRAY(sa.Text)))
        return sa.func.array(sa.select(sa.func.unnest(merged).label("tag")).distinct().order_by("tag")
                             .correlate(column.table).scalar_subquery())
    union = sa.union(
        sa.select(sa.func.json_each(sa.func.coalesce(column, "[]")).table_valued("value").c.value),
        sa.select(sa.func.json_each(_json_dumps(tags)).table_valued("value").c.value),
    ).subquery()
    return sa.select(sa.func.json_group_array(union.c.value)).scalar_subquery()


def tags_without(column, tags):
    """The tags column with tags removed (NULL stays NULL)."""
    tags = list(tags)
    if is_postgres():
        kept = sa.func.unnest(column).table_valued("tag").render_derived()
        return sa.case((column.is_(None), None), else_=sa.func.array(
            sa.select(kept.c.tag).where(kept.c.tag.not_in(tags)).order_by(kept.c.tag)
            .correlate(column.table).scalar_subquery()))
    each = sa.func.json_each(column).table_valued("value")
    return sa.case((column.is_(None), None), else_=sa.select(sa.func.json_group_array(each.c.value))
                   .where(each.c.value.not_in(tags)).scalar_subquery())


def json_remove_key(column, key):
    """A JSON document column without one key."""
    if is_postgres():
        return column.op("-")(sa.literal(key))
    return sa.func.json_remove(column, "$." + '"' + key + '"')


def json_has_key(column, key):
    """A JSON document column has the key (whatever its value)."""
    if is_postgres():
        return sa.func.jsonb_exists(column, sa.literal(key))
    return sa.func.json_type(column, "$." + '"' + key + '"').is_not(None)
