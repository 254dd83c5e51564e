"""All models, imported here so Alembic and the app see one metadata."""
from nudge.models.accounts import ROLES, Account, ApiClient, AuditLog, Invitation, User
from nudge.models.automations import Automation, AutomationInstance, AutomationStep
from nudge.models.campaigns import Campaign, EmailEvent
from nudge.models.contacts import (CONTACT_STATUSES, CUSTOM_FIELD_TYPES, SUPPRESSION_REASONS, Contact, CustomField,
                                   Import, ImportError_, Segment, SegmentMember, Suppression)
from nudge.models.templates import Template, TemplateVersion

__all__ = [
    "ROLES", "Account", "ApiClient", "AuditLog", "Invitation", "User", "Automation", "AutomationInstance",
    "AutomationStep", "Campaign", "EmailEvent", "Contact", "Segment", "Template", "TemplateVersion",
    "CONTACT_STATUSES", "CUSTOM_FIELD_TYPES", "SUPPRESSION_REASONS", "CustomField", "Import", "ImportError_",
    "SegmentMember", "Suppression",
]
