-- Rewards that last: the reward ledger, each user's characters, and the scan history.
-- One schema for both stores: {timestamp} is timestamptz on PostgreSQL, text on SQLite (ISO 8601 UTC, fixed
-- width, so it sorts as the instants do).
-- The CHECKs are the database's own word on bad data: a row it refuses is a poison event (422), never retried.
CREATE TABLE reward_ledger (
    reward_id    text PRIMARY KEY CHECK (length(reward_id) BETWEEN 1 AND 64),
    user_id      text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    character_id text NOT NULL CHECK (length(character_id) BETWEEN 1 AND 64),
    job_id       text NOT NULL CHECK (length(job_id) BETWEEN 1 AND 64),
    granted_at   {timestamp} NOT NULL
);

CREATE TABLE user_characters (
    user_id         text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    character_id    text NOT NULL CHECK (length(character_id) BETWEEN 1 AND 64),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    middle_category text NOT NULL CHECK (length(middle_category) <= 64),
    job_id          text NOT NULL,
    reward_id       text NOT NULL,
    acquired_at     {timestamp} NOT NULL,
    PRIMARY KEY (user_id, character_id)
);

CREATE TABLE scan_history (
    job_id          text PRIMARY KEY CHECK (length(job_id) BETWEEN 1 AND 64),
    user_id         text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    category        text CHECK (length(category) <= 64),
    middle_category text CHECK (length(middle_category) <= 64),
    rule_id         text CHECK (length(rule_id) <= 128),
    outcome         text NOT NULL CHECK (length(outcome) BETWEEN 1 AND 32),
    character_id    text CHECK (length(character_id) <= 64),
    reward_id       text,
    created_at      {timestamp} NOT NULL
);

CREATE INDEX scan_history_by_user ON scan_history (user_id, created_at DESC, job_id DESC);
