"""Who may do what: the spec's role map (section 5) for team members and OAuth scopes for API clients."""
from dataclasses import dataclass, field

from nudge.errors import Forbidden

ROLE_PERMISSIONS = {
    "owner": {"*"},
    "admin": {"campaigns", "contacts", "automations", "analytics", "team", "api_clients", "audit", "sending"},
    "marketer": {"campaigns", "contacts", "automations", "analytics"},
    "viewer": {"campaigns:read", "contacts:read", "analytics:read"},
}
# Every member may see their own account's settings; the grants above decide the rest.
ALWAYS = {"account:read"}

SCOPES = ("campaigns:read", "campaigns:write", "contacts:read", "contacts:write",
          "automations:execute", "analytics:read", "account:admin")
# Full access through the API, every setting included: only an owner may hand that to a program.
OWNER_ONLY_SCOPES = ("account:admin",)


def role_can(role, permission):
    grants = ROLE_PERMISSIONS.get(role, set())
    area = permission.split(":", 1)[0]
    return permission in ALWAYS or "*" in grants or area in grants or permission in grants


def role_scopes(role):
    """The API scopes a member with this role may give a client: those whose permission the role has
    (account:admin only for owners). A client's tokens never carry more than its creator's current role's."""
    return tuple(scope for scope in SCOPES
                 if role_can(role, scope) and (scope not in OWNER_ONLY_SCOPES or role == "owner"))


def scope_for(permission):
    """The OAuth scope an API caller needs for a permission; account:admin grants every one."""
    if permission in SCOPES:
        return permission
    return "account:admin"


@dataclass(frozen=True)
class ApiActor:
    """The caller behind an API token: an account's API client and the scopes its token carries."""
    account_id: object
    client_id: str
    scopes: frozenset = field(default_factory=frozenset)

    @property
    def label(self):
        return f"api:{self.client_id}"

    def can(self, permission):
        return permission in ALWAYS or "account:admin" in self.scopes or scope_for(permission) in self.scopes


def require(actor, permission):
    """Raise Forbidden unless the actor (a User or an ApiActor) may do this."""
    if actor is None or not actor.can(permission):
        if isinstance(actor, ApiActor):
            raise Forbidden(f"This token lacks the {scope_for(permission)} scope.",
                            [{"field": "scope", "issue": f"Requires {scope_for(permission)}."}])
        raise Forbidden("Your role does not allow this.")
