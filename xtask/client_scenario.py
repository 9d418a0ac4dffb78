"""An integrator's first day, through a client generated from /openapi.json.

Run by `cargo xtask schemathesis` (and so by `cargo xtask test`) against a live
`fidelis serve --demo`, with the package openapi-python-client generated on PYTHONPATH:

    python xtask/client_scenario.py http://127.0.0.1:PORT   (token in FIDELIS_TOKEN)

Enrol, earn, redeem, replay, conflict, cancel — each answer read as the typed model the
document promises, so a document that lies to its generated client fails here.
"""

import os
import sys
import uuid

from fidelis_client import AuthenticatedClient
from fidelis_client.api.journals import cancel, get_journal, post_journal
from fidelis_client.api.members import balances, enroll, redeem
from fidelis_client.models import (
    AccrualJournal,
    EnrollRequest,
    MemberBody,
    OutcomeBody,
    ProblemBody,
    PurchaseLineLineWithAmount,
    RedemptionRequest,
)

PROGRAM = "demo"


def expect(response, status, model):
    """The answer has `status` and parses as `model`."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert isinstance(response.parsed, model), (type(response.parsed), response.content[:500])
    return response.parsed


def available(client, member):
    body = balances.sync_detailed(PROGRAM, member, client=client).parsed
    return {b.currency: b.available for b in body.balances}


def main():
    base = sys.argv[1]
    client = AuthenticatedClient(base_url=base, token=os.environ["FIDELIS_TOKEN"])
    run = uuid.uuid4().hex[:8]
    member = f"client-{run}"

    # Enrol; enrolling again is a conflict with a stable code.
    created = expect(
        enroll.sync_detailed(PROGRAM, client=client, body=EnrollRequest(member=member)),
        201,
        MemberBody,
    )
    assert created.member == member
    again = expect(
        enroll.sync_detailed(PROGRAM, client=client, body=EnrollRequest(member=member)),
        409,
        ProblemBody,
    )
    assert again.code == "member_exists", again.code

    # Earn: a purchase with lines (the retail template earns 1 point per euro).
    purchase = AccrualJournal(
        external_id=f"order-{run}",
        member=member,
        type_="purchase",
        currency="EUR",
        amount="120.00",
        lines=[
            PurchaseLineLineWithAmount(line_id="1", sku="shirt", amount="40.00"),
            PurchaseLineLineWithAmount(line_id="2", sku="coat", amount="80.00"),
        ],
    )
    earned = expect(post_journal.sync_detailed(PROGRAM, client=client, body=purchase), 201, OutcomeBody)
    assert not earned.replayed
    points = sum(a.points for a in earned.awards if a.currency == "points")
    assert points >= 120, [a.to_dict() for a in earned.awards]
    assert available(client, member)["points"] == points

    # A retry of the same journal replays the first outcome and changes nothing.
    replay = post_journal.sync_detailed(PROGRAM, client=client, body=purchase)
    replayed = expect(replay, 200, OutcomeBody)
    assert replayed.replayed and replay.headers.get("Idempotent-Replayed") == "true", replay.headers
    assert available(client, member)["points"] == points

    # The same external id with another content is a conflict, and changes nothing.
    changed = AccrualJournal.from_dict({**purchase.to_dict(), "amount": "121.00", "lines": None})
    conflict = expect(post_journal.sync_detailed(PROGRAM, client=client, body=changed), 409, ProblemBody)
    assert conflict.code == "idempotency_conflict", conflict.code
    assert available(client, member)["points"] == points

    # Redeem part of it; more than there is is refused with a stable code.
    spent = expect(
        redeem.sync_detailed(
            PROGRAM,
            member,
            client=client,
            body=RedemptionRequest(external_id=f"spend-{run}", currency="points", points=50),
        ),
        201,
        OutcomeBody,
    )
    assert sum(d.points for d in spent.debited) == 50
    too_much = expect(
        redeem.sync_detailed(
            PROGRAM,
            member,
            client=client,
            body=RedemptionRequest(external_id=f"spend-more-{run}", currency="points", points=10**9),
        ),
        422,
        ProblemBody,
    )
    assert too_much.code == "insufficient_points", too_much.code
    assert available(client, member)["points"] == points - 50

    # Cancel the redemption: the points come back; cancelling again replays.
    cancelled = expect(cancel.sync_detailed(PROGRAM, f"spend-{run}", client=client), 201, OutcomeBody)
    assert sum(r.points for r in cancelled.restored) == 50
    assert available(client, member)["points"] == points
    again = expect(cancel.sync_detailed(PROGRAM, f"spend-{run}", client=client), 200, OutcomeBody)
    assert again.replayed
    assert available(client, member)["points"] == points
    journal = get_journal.sync_detailed(PROGRAM, f"order-{run}", client=client)
    assert journal.status_code == 200, journal.status_code

    # Unknown things in the path are 404 with a code.
    missing = expect(
        balances.sync_detailed(PROGRAM, f"nobody-{run}", client=client), 404, ProblemBody
    )
    assert missing.code == "unknown_member", missing.code
    print(f"client scenario: ok ({member}: earned {points}, spent and restored 50)")


if __name__ == "__main__":
    main()
