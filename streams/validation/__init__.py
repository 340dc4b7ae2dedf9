"""The validate stage: every record is a valid event or a dead letter with the reason."""

from streams.validation.validate import DeadLetter, validate_record

__all__ = ["DeadLetter", "validate_record"]
