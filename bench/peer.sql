-- The benchmark's peer: the old system's design (bench/peer.py, docs/performance.md "Peer
-- baseline"). A budgets row holds the balances; every command is ONE transaction through a
-- stored function that locks the budget row (SELECT ... FOR UPDATE), checks the rules, appends
-- one ledger row (accepted or refused, with the balances after it) and updates the balances.
-- Amounts are integer minor units. Applied to a fresh, otherwise empty database.

CREATE TABLE budgets (
    tenant_id  text        NOT NULL,
    budget_id  text        NOT NULL,
    currency   text        NOT NULL,
    hard_cap   bigint,                          -- NULL: no cap, the funds are the limit
    funded     bigint      NOT NULL DEFAULT 0,
    reserved   bigint      NOT NULL DEFAULT 0,
    charged    bigint      NOT NULL DEFAULT 0,
    sequence   bigint      NOT NULL DEFAULT 0,  -- of the budget's last ledger row
    opened_at  timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, budget_id)
);

CREATE TABLE reservations (
    tenant_id  text        NOT NULL,
    budget_id  text        NOT NULL,
    ref_id     text        NOT NULL,
    amount     bigint      NOT NULL,
    status     text        NOT NULL,            -- reserved | charged | released
    charged    bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    settled_at timestamptz,
    PRIMARY KEY (tenant_id, budget_id, ref_id)
);

-- One row per command, refusals included (outcome = the event type ours would write, reason =
-- the refusal reason), so that, like our ledger, every command leaves exactly one row.
CREATE TABLE ledger (
    tenant_id    text        NOT NULL,
    budget_id    text        NOT NULL,
    sequence     bigint      NOT NULL,
    command_id   text        NOT NULL,
    command_type text        NOT NULL,
    ref_id       text,
    amount       bigint,
    outcome      text        NOT NULL,
    reason       text,
    funded       bigint      NOT NULL,
    reserved     bigint      NOT NULL,
    charged      bigint      NOT NULL,
    available    bigint      NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, budget_id, sequence),
    UNIQUE (tenant_id, command_id)              -- a retried command is answered, not re-applied
);

-- The balances of `b` written back and one ledger row appended (the caller holds b's lock).
CREATE FUNCTION ledger_append(
    b budgets, p_command_id text, p_command_type text, p_ref_id text, p_amount bigint,
    p_outcome text, p_reason text
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_limit bigint := CASE WHEN b.hard_cap IS NOT NULL AND b.hard_cap < b.funded
                           THEN b.hard_cap ELSE b.funded END;
BEGIN
    UPDATE budgets
       SET funded = b.funded, reserved = b.reserved, charged = b.charged,
           sequence = b.sequence + 1, updated_at = now()
     WHERE tenant_id = b.tenant_id AND budget_id = b.budget_id;
    INSERT INTO ledger (tenant_id, budget_id, sequence, command_id, command_type, ref_id, amount,
                        outcome, reason, funded, reserved, charged, available)
    VALUES (b.tenant_id, b.budget_id, b.sequence + 1, p_command_id, p_command_type, p_ref_id,
            p_amount, p_outcome, p_reason, b.funded, b.reserved, b.charged,
            greatest(v_limit - b.reserved - b.charged, 0));
END $$;

-- The locked budget row; an unknown budget is an error (the workload never sends one).
CREATE FUNCTION lock_budget(p_tenant_id text, p_budget_id text) RETURNS budgets
LANGUAGE plpgsql AS $$
DECLARE
    b budgets;
BEGIN
    SELECT * INTO b FROM budgets
     WHERE tenant_id = p_tenant_id AND budget_id = p_budget_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown budget %:%', p_tenant_id, p_budget_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN b;
END $$;

-- Every function returns NULL when the command was accepted, else the refusal reason (the same
-- strings as ours); a command id seen before returns its first answer and writes nothing.

CREATE FUNCTION open_budget(
    p_command_id text, p_tenant_id text, p_budget_id text, p_currency text, p_hard_cap bigint
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    b budgets;
    v_prev ledger%ROWTYPE;
BEGIN
    INSERT INTO budgets (tenant_id, budget_id, currency, hard_cap)
    VALUES (p_tenant_id, p_budget_id, p_currency, p_hard_cap)
    ON CONFLICT DO NOTHING
    RETURNING * INTO b;
    IF FOUND THEN
        PERFORM ledger_append(b, p_command_id, 'open_budget', NULL, 0, 'budget_opened', NULL);
        RETURN NULL;
    END IF;
    b := lock_budget(p_tenant_id, p_budget_id);
    SELECT * INTO v_prev FROM ledger WHERE tenant_id = p_tenant_id AND command_id = p_command_id;
    IF FOUND THEN
        RETURN v_prev.reason;
    END IF;
    PERFORM ledger_append(b, p_command_id, 'open_budget', NULL, NULL, 'command_rejected',
                          'budget_exists');
    RETURN 'budget_exists';
END $$;

CREATE FUNCTION fund_budget(
    p_command_id text, p_tenant_id text, p_budget_id text, p_amount bigint, p_currency text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    b budgets := lock_budget(p_tenant_id, p_budget_id);
    v_prev ledger%ROWTYPE;
    v_reason text;
BEGIN
    SELECT * INTO v_prev FROM ledger WHERE tenant_id = p_tenant_id AND command_id = p_command_id;
    IF FOUND THEN
        RETURN v_prev.reason;
    END IF;
    IF p_currency <> b.currency THEN
        v_reason := 'currency_mismatch';
    ELSIF p_amount <= 0 THEN
        v_reason := 'invalid_amount';
    END IF;
    IF v_reason IS NULL THEN
        b.funded := b.funded + p_amount;
        PERFORM ledger_append(b, p_command_id, 'fund', NULL, p_amount, 'budget_funded', NULL);
    ELSE
        PERFORM ledger_append(b, p_command_id, 'fund', NULL, p_amount, 'command_rejected',
                              v_reason);
    END IF;
    RETURN v_reason;
END $$;

CREATE FUNCTION reserve_budget(
    p_command_id text, p_tenant_id text, p_budget_id text, p_ref_id text, p_amount bigint,
    p_currency text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    b budgets := lock_budget(p_tenant_id, p_budget_id);
    v_prev ledger%ROWTYPE;
    v_reason text;
    v_limit bigint;
BEGIN
    SELECT * INTO v_prev FROM ledger WHERE tenant_id = p_tenant_id AND command_id = p_command_id;
    IF FOUND THEN
        RETURN v_prev.reason;
    END IF;
    v_limit := CASE WHEN b.hard_cap IS NOT NULL AND b.hard_cap < b.funded
                    THEN b.hard_cap ELSE b.funded END;
    IF p_currency <> b.currency THEN
        v_reason := 'currency_mismatch';
    ELSIF p_amount <= 0 THEN
        v_reason := 'invalid_amount';
    ELSIF EXISTS (SELECT 1 FROM reservations WHERE tenant_id = p_tenant_id
                     AND budget_id = p_budget_id AND ref_id = p_ref_id) THEN
        v_reason := 'duplicate_ref';
    ELSIF p_amount > v_limit - b.reserved - b.charged THEN
        -- Name the binding constraint, as ours does: with the cap at or below the funds,
        -- more funding would not help.
        v_reason := CASE WHEN b.hard_cap IS NOT NULL AND b.hard_cap <= b.funded
                         THEN 'hard_cap_exceeded' ELSE 'insufficient_funds' END;
    END IF;
    IF v_reason IS NULL THEN
        INSERT INTO reservations (tenant_id, budget_id, ref_id, amount, status)
        VALUES (p_tenant_id, p_budget_id, p_ref_id, p_amount, 'reserved');
        b.reserved := b.reserved + p_amount;
        PERFORM ledger_append(b, p_command_id, 'reserve', p_ref_id, p_amount, 'funds_reserved',
                              NULL);
    ELSE
        PERFORM ledger_append(b, p_command_id, 'reserve', p_ref_id, p_amount,
                              'reservation_rejected', v_reason);
    END IF;
    RETURN v_reason;
END $$;

-- p_amount NULL: the whole reservation; a smaller amount releases the rest.
CREATE FUNCTION charge_budget(
    p_command_id text, p_tenant_id text, p_budget_id text, p_ref_id text, p_amount bigint
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    b budgets := lock_budget(p_tenant_id, p_budget_id);
    v_prev ledger%ROWTYPE;
    r reservations%ROWTYPE;
    v_reason text;
    v_amount bigint;
BEGIN
    SELECT * INTO v_prev FROM ledger WHERE tenant_id = p_tenant_id AND command_id = p_command_id;
    IF FOUND THEN
        RETURN v_prev.reason;
    END IF;
    SELECT * INTO r FROM reservations
     WHERE tenant_id = p_tenant_id AND budget_id = p_budget_id AND ref_id = p_ref_id;
    IF NOT FOUND THEN
        v_reason := 'reservation_not_found';
    ELSIF r.status <> 'reserved' THEN
        v_reason := 'reservation_not_active';
    ELSE
        v_amount := coalesce(p_amount, r.amount);
        IF v_amount <= 0 THEN
            v_reason := 'invalid_amount';
        ELSIF v_amount > r.amount THEN
            v_reason := 'amount_exceeds_reservation';
        END IF;
    END IF;
    IF v_reason IS NULL THEN
        UPDATE reservations SET status = 'charged', charged = v_amount, settled_at = now()
         WHERE tenant_id = p_tenant_id AND budget_id = p_budget_id AND ref_id = p_ref_id;
        b.reserved := b.reserved - r.amount;
        b.charged := b.charged + v_amount;
        PERFORM ledger_append(b, p_command_id, 'charge', p_ref_id, v_amount,
                              'reservation_charged', NULL);
    ELSE
        PERFORM ledger_append(b, p_command_id, 'charge', p_ref_id, p_amount, 'command_rejected',
                              v_reason);
    END IF;
    RETURN v_reason;
END $$;

CREATE FUNCTION release_budget(
    p_command_id text, p_tenant_id text, p_budget_id text, p_ref_id text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    b budgets := lock_budget(p_tenant_id, p_budget_id);
    v_prev ledger%ROWTYPE;
    r reservations%ROWTYPE;
    v_reason text;
BEGIN
    SELECT * INTO v_prev FROM ledger WHERE tenant_id = p_tenant_id AND command_id = p_command_id;
    IF FOUND THEN
        RETURN v_prev.reason;
    END IF;
    SELECT * INTO r FROM reservations
     WHERE tenant_id = p_tenant_id AND budget_id = p_budget_id AND ref_id = p_ref_id;
    IF NOT FOUND THEN
        v_reason := 'reservation_not_found';
    ELSIF r.status <> 'reserved' THEN
        v_reason := 'reservation_not_active';
    END IF;
    IF v_reason IS NULL THEN
        UPDATE reservations SET status = 'released', settled_at = now()
         WHERE tenant_id = p_tenant_id AND budget_id = p_budget_id AND ref_id = p_ref_id;
        b.reserved := b.reserved - r.amount;
        PERFORM ledger_append(b, p_command_id, 'release', p_ref_id, r.amount,
                              'reservation_released', NULL);
    ELSE
        PERFORM ledger_append(b, p_command_id, 'release', p_ref_id, NULL, 'command_rejected',
                              v_reason);
    END IF;
    RETURN v_reason;
END $$;
