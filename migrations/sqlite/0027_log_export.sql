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
    seq             INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('payment', 'gateway_webhook', 'chat_message', 'audit')),
    ref             TEXT NOT NULL,
    version         BIGINT NOT NULL DEFAULT 1,
    lease_until_ms  BIGINT NOT NULL DEFAULT 0,
    UNIQUE (kind, ref)
);
CREATE INDEX log_outbox_due ON log_outbox (lease_until_ms, seq);

CREATE TRIGGER log_outbox_event AFTER INSERT ON events
WHEN EXISTS (SELECT 1 FROM settings WHERE name = 'log_export')
BEGIN
    INSERT INTO log_outbox (kind, ref) VALUES ('payment', NEW.payment_id)
        ON CONFLICT (kind, ref) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER log_outbox_decision AFTER INSERT ON decisions
WHEN EXISTS (SELECT 1 FROM settings WHERE name = 'log_export')
BEGIN
    INSERT INTO log_outbox (kind, ref) VALUES ('payment', NEW.payment_id)
        ON CONFLICT (kind, ref) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER log_outbox_label_added AFTER INSERT ON payment_labels
WHEN EXISTS (SELECT 1 FROM settings WHERE name = 'log_export')
BEGIN
    INSERT INTO log_outbox (kind, ref) VALUES ('payment', NEW.payment_id)
        ON CONFLICT (kind, ref) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER log_outbox_label_changed AFTER UPDATE ON payment_labels
WHEN EXISTS (SELECT 1 FROM settings WHERE name = 'log_export')
BEGIN
    INSERT INTO log_outbox (kind, ref) VALUES ('payment', NEW.payment_id)
        ON CONFLICT (kind, ref) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER log_outbox_gateway_webhook_added AFTER INSERT ON gateway_webhooks
WHEN EXISTS (SELECT 1 FROM settings WHERE name = 'log_export')
BEGIN
    INSERT INTO log_outbox (kind, ref) VALUES ('gateway_webhook', NEW.gateway || ':' || NEW.webhook_id)
        ON CONFLICT (kind, ref) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER log_outbox_gateway_webhook_changed AFTER UPDATE ON gateway_webhooks
WHEN EXISTS (SELECT 1 FROM settings WHERE name = 'log_export')
BEGIN
    INSERT INTO log_outbox (kind, ref) VALUES ('gateway_webhook', NEW.gateway || ':' || NEW.webhook_id)
        ON CONFLICT (kind, ref) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER log_outbox_chat_message_added AFTER INSERT ON chat_messages
WHEN EXISTS (SELECT 1 FROM settings WHERE name = 'log_export')
BEGIN
    INSERT INTO log_outbox (kind, ref) VALUES ('chat_message', NEW.conversation_id || ':' || NEW.seq)
        ON CONFLICT (kind, ref) DO UPDATE SET version = version + 1;
END;

-- An erasure deletes the patient's messages: the copies in MongoDB go too.
CREATE TRIGGER log_outbox_chat_message_deleted AFTER DELETE ON chat_messages
WHEN EXISTS (SELECT 1 FROM settings WHERE name = 'log_export')
BEGIN
    INSERT INTO log_outbox (kind, ref) VALUES ('chat_message', OLD.conversation_id || ':' || OLD.seq)
        ON CONFLICT (kind, ref) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER log_outbox_audit AFTER INSERT ON audit_log
WHEN EXISTS (SELECT 1 FROM settings WHERE name = 'log_export')
BEGIN
    INSERT INTO log_outbox (kind, ref) VALUES ('audit', NEW.id)
        ON CONFLICT (kind, ref) DO UPDATE SET version = version + 1;
END;

-- The platform's reports read payments by day across providers.
CREATE INDEX payments_created ON payments (created_at_ms);
