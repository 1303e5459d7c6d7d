-- Shared state of the weighted-fair admission (start-time fair queuing over queue classes), kept in the
-- database so that every coordinator claiming from the ledger continues the same schedule.
-- pass: the virtual time at which the class may next be admitted; vtime: the virtual time reached so far.

CREATE TABLE queue_scheduler (
    queue_class text PRIMARY KEY,
    pass        bigint NOT NULL DEFAULT 0
);

CREATE TABLE queue_scheduler_clock (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    vtime     bigint NOT NULL DEFAULT 0
);

INSERT INTO queue_scheduler_clock DEFAULT VALUES;
