"""Who took part in a mailbox's activities, for the linker."""

from __future__ import annotations

from collections.abc import Iterable

from concord.common.v1 import resources_pb2 as res


def participants_of(items: Iterable[res.MailItem]) -> list[res.Participant]:
    """Every distinct address of the activities, with its strongest role first seen."""
    found: dict[str, res.Participant] = {}

    def add(address: res.EmailAddress | res.Attendee, role: res.ParticipantRole.ValueType) -> None:
        email = address.address if isinstance(address, res.EmailAddress) else address.email
        key = email.strip().lower()
        if key and key not in found:
            found[key] = res.Participant(
                email=email.strip(), display_name=address.display_name, role=role
            )

    attendee_roles: dict[int, res.ParticipantRole.ValueType] = {
        res.ATTENDEE_ROLE_REQUIRED: res.PARTICIPANT_ROLE_REQUIRED_ATTENDEE,
        res.ATTENDEE_ROLE_OPTIONAL: res.PARTICIPANT_ROLE_OPTIONAL_ATTENDEE,
        res.ATTENDEE_ROLE_RESOURCE: res.PARTICIPANT_ROLE_RESOURCE,
    }
    for item in items:
        payload = item.WhichOneof("payload")
        if payload == "calendar_item":
            event = item.calendar_item
            if event.HasField("organizer"):
                add(event.organizer, res.PARTICIPANT_ROLE_ORGANIZER)
            for attendee in event.attendees:
                role = attendee_roles.get(attendee.role, res.PARTICIPANT_ROLE_REQUIRED_ATTENDEE)
                add(attendee, role)
        elif payload == "email":
            email = item.email
            if email.HasField("from_address"):
                add(email.from_address, res.PARTICIPANT_ROLE_SENDER)
            for to in email.to:
                add(to, res.PARTICIPANT_ROLE_TO_RECIPIENT)
            for cc in email.cc:
                add(cc, res.PARTICIPANT_ROLE_CC_RECIPIENT)
    return list(found.values())
