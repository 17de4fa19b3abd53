-- The event log in MongoDB (when MONGODB_URL is set): what must reach it waits in `log_outbox`,
-- one row per thing to export (a payment with its events, decisions and analytics facts; a gateway
-- webhook; a chat message; an audit entry), named by its key. Triggers add the rows in the same
-- transaction as the change itself, so every path that writes these tables (the payment writer,
-- the webhook intake, the chat, the audit log, an erasure) is covered without being told, and
-- nothing is added while the export is off (no `log_export` setting: the embedded default).
-- A row changed again while it waits only gets a new `version`: the exporter deletes a row only if
-- its version is the one it exported, else exports it again. `lease_until_ms` keeps two nodes off
-- the same rows. Never edit once applied.
CREATE TABLE log_outbox (
    seq             BIGSERIAL PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('payment', 'gateway_webhook', 'chat_message', 'audit')),
    ref             TEXT NOT NULL,
    version         BIGINT NOT NULL DEFAULT 1,
    lease_until_ms  BIGINT NOT NULL DEFAULT 0,
    UNIQUE (kind, ref)
);
CREATE INDEX log_outbox_due ON log_outbox (lease_until_ms, seq);

CREATE FUNCTION log_outbox_add(add_kind TEXT, add_ref TEXT) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM settings WHERE name = 'log_export') THEN
        INSERT INTO log_outbox (kind, ref) VALUES (add_kind, add_ref)
            ON CONFLICT (kind, ref) DO UPDATE SET version = log_outbox.version + 1;
    END IF;
END $$;

CREATE FUNCTION log_outbox_payment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM log_outbox_add('payment', NEW.payment_id);
    RETURN NULL;
END $$;

CREATE FUNCTION log_outbox_gateway_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM log_outbox_add('gateway_webhook', NEW.gateway || ':' || NEW.webhook_id);
    RETURN NULL;
END $$;

-- An erasure deletes the patient's messages: the copies in MongoDB go too.
CREATE FUNCTION log_outbox_chat_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM log_outbox_add('chat_message', OLD.conversation_id || ':' || OLD.seq);
    ELSE
        PERFORM log_outbox_add('chat_message', NEW.conversation_id || ':' || NEW.seq);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION log_outbox_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM log_outbox_add('audit', NEW.id);
    RETURN NULL;
END $$;

CREATE TRIGGER log_outbox_event AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION log_outbox_payment();
CREATE TRIGGER log_outbox_decision AFTER INSERT ON decisions FOR EACH ROW EXECUTE FUNCTION log_outbox_payment();
CREATE TRIGGER log_outbox_label AFTER INSERT OR UPDATE ON payment_labels FOR EACH ROW EXECUTE FUNCTION log_outbox_payment();
CREATE TRIGGER log_outbox_gateway_webhook AFTER INSERT OR UPDATE ON gateway_webhooks
    FOR EACH ROW EXECUTE FUNCTION log_outbox_gateway_webhook();
CREATE TRIGGER log_outbox_chat_message AFTER INSERT OR DELETE ON chat_messages
    FOR EACH ROW EXECUTE FUNCTION log_outbox_chat_message();
CREATE TRIGGER log_outbox_audit AFTER INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION log_outbox_audit();

-- The platform's reports read payments by day across providers.
CREATE INDEX payments_created ON payments (created_at_ms);
