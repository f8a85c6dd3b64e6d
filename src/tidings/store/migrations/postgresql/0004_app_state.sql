-- App state written by app request handlers, in the same transaction as a persistent session's
-- nonce check and memento (issue 4: an app action and the memento commit together).
CREATE TABLE app_state (
    key TEXT COLLATE "C" PRIMARY KEY,
    value TEXT COLLATE "C" NOT NULL
);
