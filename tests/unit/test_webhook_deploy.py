"""The deliverer's Kubernetes Deployment: the app's login, no owner URL, no key it does not use,
and never LEDGER_WEBHOOK_ALLOW_PRIVATE."""

from __future__ import annotations

import pytest

from tests.unit.test_deploy_manifests import APP_URL, BY_COMMAND, OWNER_URL

pytestmark = pytest.mark.unit


def test_the_deliverer_logs_in_as_the_app_and_refuses_private_targets() -> None:
    env = BY_COMMAND["deliver"]
    assert env[APP_URL] == ("budget-ledger-app", APP_URL)
    assert OWNER_URL not in env
    assert not [k for k in env if "SIGNING_KEY" in k or "CHAIN_KEY" in k]
    assert "LEDGER_WEBHOOK_ALLOW_PRIVATE" not in env
