-- Billing lives in its own schema so its grants can be managed apart.
CREATE SCHEMA billing;

CREATE TABLE billing.invoices (
    id          bigserial PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES public.accounts (id),
    amount_cents integer NOT NULL CHECK (amount_cents >= 0),
    issued_at   timestamptz NOT NULL DEFAULT now(),
    paid_at     timestamptz
);

CREATE VIEW billing.unpaid_invoices AS
    SELECT id, account_id, amount_cents, issued_at FROM billing.invoices WHERE paid_at IS NULL;
