"""All models, imported here so Alembic and the app see one metadata."""
from nudge.models.accounts import (ROLES, Account, ApiClient, AuditLog, FirstSignup, Invitation, LoginAttempt,
                                   UsedTotpCode, User)
from nudge.models.automations import Automation, AutomationInstance, AutomationStep
from nudge.models.campaigns import MESSAGE_STATUSES, Campaign, EmailEvent, Message, SendingConfig
from nudge.models.contacts import (CONTACT_STATUSES, CUSTOM_FIELD_TYPES, SUPPRESSION_REASONS, Contact, ContactTag,
                                   ContactValue, CustomField, Import, ImportError_, Segment, SegmentMember, Suppression)
from nudge.models.sending import SendingDomain, TestSend, VerifiedSender
from nudge.models.templates import TEMPLATE_FORMATS, Template, TemplateVersion, Upload

__all__ = [
    "ROLES", "Account", "ApiClient", "AuditLog", "Invitation", "User", "Automation", "AutomationInstance",
    "FirstSignup", "LoginAttempt", "UsedTotpCode",
    "AutomationStep", "Campaign", "EmailEvent", "MESSAGE_STATUSES", "Message", "SendingConfig", "Contact", "Segment", "Template", "TemplateVersion", "TEMPLATE_FORMATS", "Upload",
    "CONTACT_STATUSES", "CUSTOM_FIELD_TYPES", "SUPPRESSION_REASONS", "ContactTag", "ContactValue", "CustomField",
    "Import", "ImportError_",
    "SegmentMember", "Suppression", "SendingDomain", "TestSend", "VerifiedSender",
]
