"""Automation workflows, their steps and per-contact instances (spec section 2)."""
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models.types import UUID, JSONDoc, account_fk, created_column, id_column, utcnow


class Automation(db.Model):
    __tablename__ = "automations"
    __table_args__ = (sa.Index("ix_automations_account_id", "account_id"),)
    id = id_column()
    account_id = account_fk()
    name = sa.Column(sa.String(255), nullable=False)
    trigger_type = sa.Column(sa.String(50), nullable=False)
    trigger_config = sa.Column(JSONDoc)
    status = sa.Column(sa.String(20), nullable=False, default="draft", server_default="draft")
    activated_at = sa.Column(sa.DateTime)
    created_at = created_column()


class AutomationStep(db.Model):
    __tablename__ = "automation_steps"
    __table_args__ = (sa.Index("ix_automation_steps_automation_position", "automation_id", "position"),)
    id = id_column()
    automation_id = sa.Column(UUID, sa.ForeignKey("automations.id", ondelete="CASCADE"), nullable=False)
    step_type = sa.Column(sa.String(50), nullable=False)
    step_config = sa.Column(JSONDoc, nullable=False)
    position = sa.Column(sa.Integer, nullable=False)
    delay_minutes = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")


class AutomationInstance(db.Model):
    __tablename__ = "automation_instances"
    __table_args__ = (sa.Index("ix_automation_instances_automation_status", "automation_id", "status"),)
    id = id_column()
    automation_id = sa.Column(UUID, sa.ForeignKey("automations.id", ondelete="CASCADE"), nullable=False)
    contact_id = sa.Column(UUID, sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False)
    current_step = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    status = sa.Column(sa.String(20), nullable=False, default="active", server_default="active")
    started_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, server_default=sa.func.now())
    completed_at = sa.Column(sa.DateTime)
