"""The page's form: CSRF protection from Flask-WTF, values checked by task_app.options."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import StringField, SubmitField

# Fields the browser sends as text; converted here, then validated with the API's rules.
INTEGER_FIELDS = ("count", "fail_attempts")
NUMBER_FIELDS = ("delay_seconds", "work_seconds")


class ScheduleForm(FlaskForm):
    """Optional fields; an empty field means the API's default."""

    message = StringField("Message")
    delay_seconds = StringField("Delay (seconds, up to 30 days)")
    count = StringField("Number of tasks (1 to 100)")
    fail_attempts = StringField("Fail the first K attempts")
    work_seconds = StringField("Work (seconds)")
    submit = SubmitField("Schedule task")


def form_values(form: ScheduleForm) -> tuple[dict[str, object], dict[str, str]]:
    """The filled-in fields as API values, and the fields that are not numbers at all."""
    values: dict[str, object] = {}
    errors: dict[str, str] = {}
    message = (form.message.data or "").strip()
    if message:
        values["message"] = message
    for name in INTEGER_FIELDS + NUMBER_FIELDS:
        raw = (getattr(form, name).data or "").strip()
        if not raw:
            continue
        try:
            values[name] = int(raw) if name in INTEGER_FIELDS else float(raw)
        except ValueError:
            kind = "a whole number" if name in INTEGER_FIELDS else "a number"
            errors[name] = f"must be {kind}, got {raw!r}"
    return values, errors
