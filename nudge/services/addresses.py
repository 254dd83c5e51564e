"""An address's identity: the same address in another case (Ann@Example.com, ann@example.com) is the same
contact and the same suppression entry. The address is kept as first typed; identity is lower(email) as the
database computes it (the unique indexes of migration 0016), so every comparison lowers both sides in SQL."""
import sqlalchemy as sa

MAX_IN_LIST = 1000  # addresses per IN (...) list; callers chunk larger lists


def identity(column):
    """The SQL expression the unique indexes on contacts and suppressions are built on."""
    return sa.func.lower(column)


def same_address(column, email):
    """A SQL condition: column holds email in any case (uses the (account_id, lower(email)) index)."""
    return identity(column) == sa.func.lower(sa.literal(email, sa.String))


def any_address(column, emails):
    """A SQL condition: column holds one of emails (at most MAX_IN_LIST), in any case."""
    return identity(column).in_([sa.func.lower(sa.literal(email, sa.String)) for email in emails])


def same_column(column, other):
    """A SQL condition: two address columns hold the same address in any case."""
    return identity(column) == identity(other)


def unique_addresses(emails):
    """emails without repeats in any case, each address in its first spelling, in order."""
    first = {}
    for email in emails:
        first.setdefault(email.lower(), email)
    return list(first.values())
