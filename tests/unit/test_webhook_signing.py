"""Standard Webhooks signing: the specification's example vector, an independent verifier (the
`standardwebhooks` package), and the secret's form."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from budget_ledger.consumers.webhook_signing import headers, new_secret, sign, webhook_id

pytestmark = pytest.mark.unit

# The example of the specification's reference libraries (secret, id, timestamp, body, header).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_spec_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE
    # The prefix is optional in the spec: the same key without it.
    assert sign(SPEC_SECRET.removeprefix("whsec_"), SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE


def test_the_independent_implementation_agrees() -> None:
    stamp = datetime.fromtimestamp(SPEC_TS, UTC)
    assert Webhook(SPEC_SECRET).sign(SPEC_ID, stamp, SPEC_BODY.decode()) == SPEC_SIGNATURE


def test_headers_verify_with_standardwebhooks_and_a_changed_body_does_not() -> None:
    secret = new_secret()
    body = b'{"alert_id": "abc", "type": "hard_cap_reached"}'
    now = int(datetime.now(UTC).timestamp())
    h = headers(secret, webhook_id("abc"), now, body)
    assert h["webhook-id"] == "alrt_abc"
    assert Webhook(secret).verify(body, h) == {"alert_id": "abc", "type": "hard_cap_reached"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"abc", b"abd"), h)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, h)


def test_a_new_secret_is_32_random_bytes_in_whsec_form() -> None:
    a, b = new_secret(), new_secret()
    assert a != b and a.startswith("whsec_")
    assert len(base64.b64decode(a.removeprefix("whsec_"))) == 32
