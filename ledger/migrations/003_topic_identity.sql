-- Topic identity: the ledger, the relay cursors and the consumer positions know which topic
-- (and which incarnation of it) a command came from. Every ledger row and hash is kept as is:
-- the hash covers the event, not its Kafka coordinates.

-- A command is named by (topic, partition, offset): offsets of another topic, or of the same
-- name re-created, are other commands. The old key made them collide (a livelock of retries).
ALTER TABLE ledger DROP CONSTRAINT ledger_pkey;
ALTER TABLE ledger ADD PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset);

-- Relay cursors per (ledger topic, partition). The old relay walked a partition by offset
-- whatever the topic, so its offset is right for every topic the ledger holds on that partition.
-- A cursor of a partition without ledger rows carries nothing: it is dropped, and the consumer
-- creates the cursor of its topic on assignment.
ALTER TABLE relay_cursors RENAME TO relay_cursors_001;
CREATE TABLE relay_cursors (
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    last_offset bigint  NOT NULL DEFAULT -1,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
INSERT INTO relay_cursors (topic, partition, last_offset, updated_at)
SELECT t.kafka_topic, t.kafka_partition, c.last_offset, c.updated_at
FROM (SELECT DISTINCT kafka_topic, kafka_partition FROM ledger) AS t
JOIN relay_cursors_001 c ON c.partition = t.kafka_partition;
DROP TABLE relay_cursors_001;
GRANT SELECT, INSERT, UPDATE ON relay_cursors TO ledger_app;

-- What identifies the topic a stored position belongs to: Kafka's topic id, recorded the first
-- time the consumer sees the partition. `ledger_topic` is the name the ledger rows of this
-- position carry: the topic name, or `name@topic_id` once an operator accepted a re-created
-- topic (its offsets restart at 0 and must not collide with the old incarnation's rows).
ALTER TABLE consumer_positions ADD COLUMN topic_id text;
ALTER TABLE consumer_positions ADD COLUMN ledger_topic text;

-- Every deliberate move of a stored position (`budget-ledger positions realign`): what was
-- skipped or replayed, who did it and when. Append-only like the ledger.
CREATE TABLE position_realignments (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer_group   text    NOT NULL,
    topic            text    NOT NULL,
    partition        integer NOT NULL,
    old_offset       bigint,
    new_offset       bigint  NOT NULL,
    old_topic_id     text,
    new_topic_id     text,
    old_ledger_topic text,
    new_ledger_topic text    NOT NULL,
    log_start        bigint,
    log_end          bigint,
    reason           text    NOT NULL,
    operator         text    NOT NULL,
    realigned_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER position_realignments_append_only
    BEFORE UPDATE OR DELETE ON position_realignments
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
GRANT SELECT, INSERT ON position_realignments TO ledger_app;
