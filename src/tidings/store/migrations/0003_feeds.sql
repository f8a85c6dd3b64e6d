CREATE TABLE feeds (
    name TEXT NOT NULL,
    args TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (name, args)
) WITHOUT ROWID;
