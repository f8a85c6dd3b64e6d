CREATE TABLE feeds (
    name TEXT COLLATE "C" NOT NULL,
    args TEXT COLLATE "C" NOT NULL,
    document TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (name, args)
);
